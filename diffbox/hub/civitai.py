"""Civitai REST v1 with requests: search, plan a version's file, resolve its signed download URL.

The base URL comes from DIFFBOX_CIVITAI_URL (tests point it at a local fake). The token travels
as `Authorization: Bearer` to that host only: the download endpoint answers with a redirect to a
short-lived signed URL on a storage host, which is fetched without it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Callable
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from diffbox import __version__
from diffbox.base_models import BASES, QWEN_EDIT, QWEN_IMAGE
from diffbox.hub import HubError, ListingPage, RateLimited, TransientError, retry_after
from diffbox.hub.library import UNKNOWN
from diffbox.hub.plan import Plan, PlannedFile
from diffbox.hub.safety import UnsafeFile, filename_from_content_disposition, safe_filename

log = logging.getLogger(__name__)

DEFAULT_URL = "https://civitai.com"
# No browser words: Civitai answers a browser-like User-Agent's 401 with a login page, not JSON.
USER_AGENT = f"diffbox/{__version__} python-requests/{requests.__version__}"
API_TIMEOUT = (10, 30)
BASE_MODEL_STRINGS = {b.key: list(b.civitai) for b in BASES}
KIND_TYPES = {"lora": ["LORA", "LoCon", "DoRA"], "checkpoint": ["Checkpoint"], "vae": ["VAE"],
              "controlnet": ["Controlnet"], "upscaler": ["Upscaler"]}
TYPE_KINDS = {t: kind for kind, types in KIND_TYPES.items() for t in types}
SORTS = {"downloads": "Most Downloaded", "likes": "Most Liked", "rating": "Highest Rated", "newest": "Newest",
         "trending": "Most Collected", "updated": "Newest"}
SAFE_FORMATS = ("SafeTensor", "GGUF")
CATALOG_PAGE = 100  # the API's largest page
AIR = re.compile(r"civitai:(\d+)@(\d+)")
PAGE_URL = re.compile(r"/models/(\d+)(?:[^?#]*)(?:\?(?:.*&)?modelVersionId=(\d+))?")
REF = re.compile(r"^(\d+)(?:@(\d+))?$")


def base_model_key(label: str | None) -> str:
    for key, labels in BASE_MODEL_STRINGS.items():
        if label in labels:
            return QWEN_IMAGE if key == QWEN_EDIT else key  # "Qwen" names both: the plain model
    return UNKNOWN


def parse_ref(model_ref: str) -> tuple[str, str]:
    """(model id, version id or "") from `123`, `123@456`, an AIR urn or a civitai.com model URL."""
    text = str(model_ref).strip()
    for pattern in (REF, AIR, PAGE_URL):
        match = pattern.search(text)
        if match:
            return match.group(1), match.group(2) or ""
    raise HubError(f"{model_ref!r} is not a Civitai model id (expected a number, id@version, an AIR or a model URL)")


class Civitai:
    def __init__(self, base_url: str | None, token: Callable[[], str | None]):
        self.base = (base_url or DEFAULT_URL).rstrip("/")
        self._token = token

    def _headers(self) -> dict:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token := self._token():
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _get_json(self, path: str, params=None, what: str = "") -> dict:
        try:
            response = requests.get(f"{self.base}{path}", params=params, headers=self._headers(), timeout=API_TIMEOUT)
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach Civitai at {self.base} ({type(exc).__name__})") from None
        if response.status_code == 404:
            raise HubError(f"Civitai has no {what or 'such model'}")
        if response.status_code == 401:
            raise HubError(f"Civitai wants a valid token for {what or 'this request'}: set one in Models → Tokens")
        if response.status_code == 429:
            raise RateLimited("Civitai answered HTTP 429 (rate limit)",
                              retry_after(response.headers))
        if response.status_code >= 500:
            raise TransientError(f"Civitai answered HTTP {response.status_code} (a server error)")
        if response.status_code != 200:
            raise HubError(f"Civitai answered HTTP {response.status_code} for {what or path}")
        try:
            return response.json()
        except ValueError:
            raise TransientError("Civitai answered something that is not JSON") from None

    # -- search ---------------------------------------------------------------------------------

    def search(self, query: str, kind: str, base_model: str, sort: str, nsfw: bool, limit: int = 30,
               cursor: str | None = None) -> tuple[list[dict], str | None]:
        if kind == "diffusers":
            return [], None  # Civitai has no diffusers folders
        params: list[tuple[str, str]] = [("limit", str(limit)), ("sort", SORTS.get(sort, "Most Downloaded")),
                                         ("nsfw", "true" if nsfw else "false")]
        if query:
            params.append(("query", query))  # with a query only cursor pagination works (page= is a 400)
        if cursor:
            params.append(("cursor", cursor))
        params += [("types", t) for t in KIND_TYPES.get(kind, [])]
        params += [("baseModels", b) for b in BASE_MODEL_STRINGS.get(base_model, [])]
        data = self._get_json("/api/v1/models", params, "search")
        results = [self._result(item, nsfw) for item in data.get("items") or []]
        results = [r for r in results if r and (nsfw or not r["nsfw"])]
        return results, (data.get("metadata") or {}).get("nextCursor")

    def catalog_page(self, params: list[tuple[str, str]], cursor: str | None) -> ListingPage:
        """One page of a model listing (cursor pagination: `metadata.nextCursor`, absent on the last page).
        Items that are not models are skipped with a reason; a page that is not JSON is a TransientError
        (the next cursor is inside it, so it cannot be skipped: the walk retries it, or resumes there later)."""
        query = [*params, ("limit", str(CATALOG_PAGE)), ("nsfw", "true"), *([("cursor", cursor)] if cursor else [])]
        data = self._get_json("/api/v1/models", query, "the catalog listing")
        if not isinstance(data, dict):
            raise TransientError("Civitai answered a listing page that is not a JSON object")
        metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        next_cursor = metadata.get("nextCursor")
        if next_cursor is None and isinstance(metadata.get("nextPage"), str):  # only its cursor: the URL is not
            next_cursor = (parse_qs(urlsplit(metadata["nextPage"]).query).get("cursor") or [None])[0]  # followed
        next_cursor = str(next_cursor) if isinstance(next_cursor, (str, int)) and str(next_cursor) else None
        items = data.get("items")
        if not isinstance(items, list):
            return ListingPage([], next_cursor, [f"a Civitai listing page had no list of items ({str(items)[:60]}); "
                                                 "skipped it"])
        results, skipped = [], []
        for item in items:
            try:
                result = self._result(item, nsfw=False)
            except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
                result, reason = None, f"{type(exc).__name__}: {str(exc)[:80]}"
            else:
                reason = "it has no published version"
            if result is not None and not REF.fullmatch(result["id"]):
                result, reason = None, "its id is not a number"
            if result is None:
                skipped.append(f"skipped Civitai item {str(item)[:60]}…: {reason}")
            else:
                results.append(result)
        return ListingPage(results, next_cursor, skipped)

    def model(self, model_id: str) -> dict:
        """One model's catalog entry as Civitai has it now ("refresh this model")."""
        item = self._get_json(f"/api/v1/models/{parse_ref(model_id)[0]}", what=f"model {model_id}")
        result = self._result(item, nsfw=False) if isinstance(item, dict) else None
        if result is None:
            raise HubError(f"Civitai model {model_id} has no published version")
        return result

    def page_url(self, model_id) -> str:
        return f"{self.base}/models/{model_id}"

    def _result(self, item: dict, nsfw: bool) -> dict | None:
        versions = item.get("modelVersions") or []
        if not versions:
            return None
        version = versions[0]
        files = version.get("files") or []
        primary = next((f for f in files if f.get("primary")), files[0] if files else {})
        images = [i for i in version.get("images") or [] if i.get("type", "image") == "image"
                  and (nsfw or (i.get("nsfwLevel") or 1) <= 1)]
        stats = item.get("stats") or {}
        return {
            "source": "civitai", "id": str(item.get("id")), "version_id": str(version.get("id", "")),
            "name": item.get("name") or "", "author": (item.get("creator") or {}).get("username") or "",
            "downloads": int(stats.get("downloadCount") or 0), "rating": int(stats.get("thumbsUpCount") or 0),
            "size": int(float(primary.get("sizeKB") or 0) * 1024), "base_model": base_model_key(version.get("baseModel")),
            "base_model_label": version.get("baseModel") or "", "kind": TYPE_KINDS.get(item.get("type"), "other"),
            "thumbnail": images[0].get("url") if images else None, "nsfw": bool(item.get("nsfw")),
            "url": self.page_url(item.get("id")), "updated": version.get("publishedAt") or "",
            "tags": [str(t)[:200] for t in item.get("tags") or [] if isinstance(t, (str, int))][:40],
            "trained_words": [w[:200] for w in version.get("trainedWords") or [] if isinstance(w, str)][:20],
            "description": str(item.get("description") or "")[:20000],
            "files": [{"name": f.get("name"), "size": int(float(f.get("sizeKB") or 0) * 1024),
                       "sha256": ((f.get("hashes") or {}).get("SHA256") or "").lower(),
                       "format": (f.get("metadata") or {}).get("format"), "primary": bool(f.get("primary"))}
                      for f in files],
        }

    # -- planning a download --------------------------------------------------------------------

    def plan(self, model_ref: str, file: str = "") -> Plan:
        model_id, version_id = parse_ref(model_ref)
        if version_id:
            version = self._get_json(f"/api/v1/model-versions/{version_id}", what=f"model version {version_id}")
            model = version.get("model") or {}
            if str(version.get("modelId", model_id)) != model_id:
                raise HubError(f"Civitai version {version_id} belongs to model {version.get('modelId')}, not {model_id}")
            model_type, model_name = model.get("type"), model.get("name") or model_id
        else:
            item = self._get_json(f"/api/v1/models/{model_id}", what=f"model {model_id}")
            versions = item.get("modelVersions") or []
            if not versions:
                raise HubError(f"Civitai model {model_id} has no published version")
            version, model_type, model_name = versions[0], item.get("type"), item.get("name") or model_id
        kind = TYPE_KINDS.get(model_type)
        if kind is None:
            raise HubError(f"{model_name} is a Civitai {model_type} model; diffbox uses only LoRAs, checkpoints, "
                           "VAEs and ControlNets")
        chosen = self._choose_file(version.get("files") or [], file, model_name)
        query = urlsplit(chosen.get("downloadUrl") or "").query
        # Rebuilt on our base URL: the token must only ever go to the Civitai host we were told to use.
        url = f"{self.base}/api/download/models/{version['id']}" + (f"?{query}" if query else "")
        # The API's name wins; the download's Content-Disposition is the fallback. Both are sanitised.
        name = safe_filename(chosen.get("name") or self._name_from_download(url, model_name) or "")
        metadata = chosen.get("metadata") or {}
        if metadata.get("format") and metadata["format"] not in SAFE_FORMATS:
            raise UnsafeFile(f"refused {name}: it is a {metadata['format']} file; diffbox only accepts "
                             "SafeTensor and GGUF files")
        for scan in ("pickleScanResult", "virusScanResult"):
            if chosen.get(scan, "Success") != "Success":
                raise UnsafeFile(f"refused {name}: Civitai's {scan[:-10]} scan says {chosen.get(scan)!r}")
        planned = PlannedFile(path=name, size=int(float(chosen.get("sizeKB") or 0) * 1024),
                              sha256=((chosen.get("hashes") or {}).get("SHA256") or "").lower(), url=url)
        return Plan("civitai", model_id, str(version["id"]), f"{model_name} · {version.get('name', '')}".strip(" ·"),
                    [planned], kind, base_model_key(version.get("baseModel")))

    def _name_from_download(self, url: str, title: str) -> str | None:
        """The file name the storage host gives the download: the API's answer is only a redirect to a
        signed URL, and the name comes with that URL's own answer (its first byte is all we ask for)."""
        try:
            location, headers = self.resolve(url, title)
            with requests.get(location, headers={**headers, "Range": "bytes=0-0"}, timeout=API_TIMEOUT,
                              stream=True) as response:
                return filename_from_content_disposition(response.headers.get("Content-Disposition"))
        except (requests.RequestException, HubError):
            return None

    @staticmethod
    def _choose_file(files: list[dict], wanted: str, model_name: str) -> dict:
        if not files:
            raise HubError(f"{model_name} has no files on Civitai")
        if not wanted:
            return next((f for f in files if f.get("primary")), files[0])
        for f in files:
            if wanted in (f.get("name"), str(f.get("id"))) or wanted.lower() == str(f.get("name", "")).lower():
                return f
        raise HubError(f"{model_name} has no file {wanted!r}; its files: {', '.join(str(f.get('name')) for f in files)}")

    # -- the signed URL -------------------------------------------------------------------------

    def resolve(self, url: str, title: str) -> tuple[str, dict]:
        """The URL to fetch the bytes from, and the headers to send there.

        Asked again whenever a signed URL has expired. Authorization goes along only if the
        file is served by the Civitai host itself, never to the storage host of a redirect.
        """
        try:
            response = requests.get(url, headers=self._headers(), allow_redirects=False, timeout=API_TIMEOUT,
                                    stream=True)  # stream: if the API serves the file itself, do not read it here
        except requests.RequestException as exc:
            raise TransientError(f"cannot reach Civitai at {self.base} ({type(exc).__name__})") from None
        with response:
            return self._explain_download_answer(response, url, title)

    def _explain_download_answer(self, response: requests.Response, url: str, title: str) -> tuple[str, dict]:
        status = response.status_code
        if response.is_redirect:
            location = urljoin(url, response.headers.get("Location", ""))
            if "/login" in urlsplit(location).path or "reason=download-auth" in location:
                raise self._needs_token(title)
            same_host = urlsplit(location).netloc == urlsplit(self.base).netloc
            return location, (self._headers() if same_host else {"User-Agent": USER_AGENT})
        if status == 200:
            return url, self._headers()
        if status == 401:
            raise self._needs_token(title)
        if status == 403:
            try:
                body = json.loads(response.raw.read(65536) or b"{}")
            except (ValueError, OSError):
                body = {}
            body = body if isinstance(body, dict) else {}
            if "early" in str(body.get("error", "")).lower():
                raise HubError(f"{title} is in early access on Civitai until {body.get('deadline', 'later')}; "
                               "only supporters can download it now")
            raise HubError(f"Civitai refused the download of {title} (HTTP 403): your account has no access to it")
        if status == 404:
            raise HubError(f"Civitai has no download for {title} (HTTP 404)")
        if status == 410:
            raise HubError(f"{title} was archived on Civitai and can no longer be downloaded")
        if status == 429 or status >= 500:
            raise TransientError(f"Civitai answered HTTP {status} for the download link")
        raise HubError(f"Civitai answered HTTP {status} for the download link of {title}")

    def _needs_token(self, title: str) -> HubError:
        if self._token():
            return HubError(f"Civitai refused your token for {title} (HTTP 401): check the token in Models → Tokens")
        return HubError(f"{title} needs a Civitai token: create an API key on civitai.com (account settings) and "
                        "set it in Models → Tokens, or start diffbox with CIVITAI_TOKEN")
