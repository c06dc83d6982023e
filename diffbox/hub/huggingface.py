"""Hugging Face: search and catalog walks over the /api/models listing, plan from model_info, download with
hf_hub_download.

The endpoint comes from HF_ENDPOINT (read when the app starts, passed explicitly as `endpoint=`),
which is how tests point this at a local fake Hub. Transfers are huggingface_hub's own (hf_xet
when the repo uses Xet, plain HTTP with in-process Range resume otherwise); diffbox adds the
staging folder, the sha256 / git-blob check and the move into models/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from huggingface_hub import HfApi, hf_hub_download, hf_hub_url
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, parse_ratelimit_headers
from huggingface_hub.utils import httpx  # httpx2 in huggingface_hub 2.x

from diffbox import __version__

from diffbox.base_models import BASES
from diffbox.hub import HubError, ListingPage, RateLimited, Stopped, TransientError, retry_after
from diffbox.hub.library import UNKNOWN, hint_base_model
from diffbox.hub.plan import Plan, PlannedFile
from diffbox.hub.safety import CONFIG_SUFFIXES, PICKLE_SUFFIXES, WEIGHT_SUFFIXES, UnsafeFile, safe_relative_path

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
# The model-tree tags (base_model:adapter:<repo>) a search filters on, per base model.
BASE_MODEL_REPOS = {b.key: b.hf_repo for b in BASES}
SORTS = {"downloads": "downloads", "likes": "likes", "newest": "createdAt", "updated": "lastModified",
         "trending": "trendingScore"}  # the API's names (list_models' created_at etc. map to these)
EXPAND = ["author", "downloads", "likes", "tags", "pipeline_tag", "library_name", "lastModified", "usedStorage",
          "sha"]
NSFW_TAG = "not-for-all-audiences"
# A catalog walk asks for these too: the card's trigger words and example prompts are what people search by.
CATALOG_EXPAND = [*EXPAND, "cardData"]
CATALOG_PAGE = 500
CATALOG_TIMEOUT = 30.0
CARD_BYTES = 64 * 1024  # of a model card's text, for the catalog's description
# A live search waits this long for the Hub, then the catalog answers alone (no retries: list_models would
# retry an unreachable Hub five times, 1+2+4+8+8 s).
SEARCH_DEADLINE_S = 8.0


def _kind_from_tags(tags: list[str], library_name: str | None) -> str:
    if "lora" in tags:
        return "lora"
    if "controlnet" in tags:
        return "controlnet"
    if library_name == "diffusers" or "diffusers" in tags:
        return "diffusers"
    return "checkpoint"


def _base_from_tags(tags: list[str], repo_id: str) -> str:
    for tag in tags:
        if tag.startswith("base_model:") and (base := hint_base_model(tag.rsplit(":", 1)[-1])):
            return base
    return hint_base_model(repo_id) or UNKNOWN


class HuggingFace:
    def __init__(self, endpoint: str | None, token: Callable[[], str | None],
                 search_deadline_s: float = SEARCH_DEADLINE_S):
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self._token = token
        self.search_deadline_s = search_deadline_s

    def _headers(self) -> dict:
        """What huggingface_hub sends (user agent, our token or none) on the requests made without HfApi."""
        return build_hf_headers(token=self._token() or False, library_name="diffbox", library_version=__version__)

    def _api(self) -> HfApi:
        # token=False: diffbox's token store (HF_TOKEN or the UI) is the only source of credentials.
        return HfApi(endpoint=self.endpoint, token=self._token() or False)

    def _explain(self, exc: Exception, what: str) -> HubError:
        """huggingface_hub's exceptions as sentences a user can act on."""
        has_token = bool(self._token())
        if isinstance(exc, GatedRepoError):
            return HubError(f"{what} is gated: accept its license on Hugging Face and "
                            + ("check that your Hugging Face token has access" if has_token
                               else "set a Hugging Face token in Models → Tokens (or HF_TOKEN)"))
        if isinstance(exc, RepositoryNotFoundError):
            return HubError(f"Hugging Face has no model {what}" + ("" if has_token else
                            " (if it is private, set a Hugging Face token in Models → Tokens)"))
        if isinstance(exc, RevisionNotFoundError):
            return HubError(f"{what}: no such revision on Hugging Face")
        if isinstance(exc, EntryNotFoundError):
            return HubError(f"{what}: no such file in the repository")
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status == 401:
                return HubError(f"{what} needs a Hugging Face token: set one in Models → Tokens (or HF_TOKEN)")
            if status == 429 or status >= 500:
                return TransientError(f"Hugging Face answered HTTP {status} for {what} (a server error or rate limit)")
            return HubError(f"Hugging Face answered HTTP {status} for {what}")
        if isinstance(exc, (httpx.TransportError, LocalEntryNotFoundError, ConnectionError, TimeoutError)):
            return TransientError(f"cannot reach Hugging Face at {self.endpoint} ({type(exc).__name__})")
        return HubError(f"Hugging Face request for {what} failed: {exc}")

    # -- search ---------------------------------------------------------------------------------

    def search(self, query: str, kind: str, base_model: str, sort: str, nsfw: bool, limit: int = 30) -> list[dict]:
        """One page of the Hub's model listing for a query. No retries (list_models retries an unreachable Hub
        for ~23 s): within the deadline or not at all, the catalog answers meanwhile."""
        if kind == "upscaler":
            return []  # the Hub has no tag for them; the catalog lists Civitai's
        params = [("search", query)] if query else []
        repo = BASE_MODEL_REPOS.get(base_model)
        if repo:
            relation = {"lora": "adapter:", "checkpoint": "finetune:"}.get(kind, "")
            params.append(("filter", f"base_model:{relation}{repo}"))
        if kind in ("lora", "controlnet", "diffusers") and not (kind == "lora" and repo):
            params.append(("filter", kind))
        params += [("sort", SORTS.get(sort, "downloads")), *(("expand", e) for e in EXPAND), ("limit", str(limit))]
        response = self._listing(f"{self.endpoint}/api/models", params, self.search_deadline_s, "the search")
        try:
            items = response.json()
            results = [self._result(ModelInfo(**item)) for item in items]
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise TransientError(f"Hugging Face answered a search this app cannot read ({type(exc).__name__})") \
                from None
        return [r for r in results if nsfw or not r["nsfw"]]

    def _listing(self, url: str, params, timeout: float, what: str):
        """GET a model listing: the response, or a TransientError / RateLimited / HubError sentence."""
        try:
            response = get_session().get(url, params=params, headers=self._headers(), timeout=timeout)
        except httpx.TimeoutException:
            raise TransientError(f"Hugging Face at {self.endpoint} did not answer within {timeout:g} s") from None
        except (httpx.TransportError, ConnectionError, TimeoutError) as exc:
            raise TransientError(f"cannot reach Hugging Face at {self.endpoint} ({type(exc).__name__})") from None
        if response.status_code == 429:
            limit = parse_ratelimit_headers(response.headers)
            raise RateLimited("Hugging Face answered HTTP 429 (rate limit)",
                              retry_after(response.headers, limit.reset_in_seconds if limit else None))
        try:
            hf_raise_for_status(response)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence
            raise self._explain(exc, what) from None
        return response

    def _result(self, info) -> dict:
        tags = list(info.tags or [])
        author, _, name = info.id.rpartition("/")
        card = info.card_data
        trained = card.get("instance_prompt") if card else None
        widgets = card.get("widget") if card else None
        examples = [w.get("text") for w in widgets if isinstance(w, dict) and isinstance(w.get("text"), str)] \
            if isinstance(widgets, list) else []
        return {
            "source": "hf", "id": info.id, "version_id": info.sha or "", "name": name or info.id,
            "author": info.author or author, "downloads": int(info.downloads or 0), "rating": int(info.likes or 0),
            "size": int(info.used_storage or 0), "base_model": _base_from_tags(tags, info.id),
            "kind": _kind_from_tags(tags, info.library_name), "thumbnail": None, "nsfw": NSFW_TAG in tags,
            "url": f"{self.endpoint}/{info.id}", "files": [],
            "updated": info.last_modified.isoformat() if info.last_modified else "",
            "tags": [t[:200] for t in tags if ":" not in t][:40],  # the words, not the model-tree and license tags
            "trained_words": [trained[:200]] if isinstance(trained, str) and trained.strip() else [],
            "description": " · ".join(examples[:10]),
        }

    # -- the catalog: one listing page at a time --------------------------------------------------

    def model(self, repo_id: str) -> dict:
        """One model's catalog entry as the Hub has it now ("refresh this model"), with its model card's text as
        the description (a listing carries only the card's metadata; one request per model is too many for a walk)."""
        try:
            result = self._result(self._api().model_info(repo_id, expand=CATALOG_EXPAND))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence
            raise self._explain(exc, repo_id) from None
        card = self._card_text(repo_id)
        if card:
            result["description"] = " · ".join(x for x in (result["description"], card) if x)
        return result

    def _card_text(self, repo_id: str) -> str:
        """README.md without its YAML header, or "" when there is none (or the Hub does not answer)."""
        try:
            response = get_session().get(hf_hub_url(repo_id, "README.md", endpoint=self.endpoint),
                                         headers=self._headers(), timeout=CATALOG_TIMEOUT, follow_redirects=True)
        except (httpx.TransportError, ConnectionError, TimeoutError):
            return ""
        if response.status_code != 200:
            return ""
        text = response.content[:CARD_BYTES].decode("utf-8", "replace")
        if text.startswith("---"):
            text = text.split("\n---", 1)[-1] if "\n---" in text[3:] else ""
        return text.strip()

    def catalog_page(self, params: list[tuple[str, str]], cursor: str | None) -> ListingPage:
        """One page of a model listing; its cursor is the next page's URL (None at the end). list_models follows the pages itself but hides where it is; a catalog walk must be able to
        stop and resume, so the Link header's next URL (the Hub's cursor) is kept here. A page whose body is
        not a JSON list is skipped (its next link is in the headers), as is any item that is not a model."""
        url = cursor or f"{self.endpoint}/api/models"
        if cursor and not url.startswith(self.endpoint + "/"):
            raise HubError(f"refused a next-page link outside {self.endpoint}")
        query = None if cursor else [*params, *(("expand", e) for e in CATALOG_EXPAND), ("limit", str(CATALOG_PAGE))]
        response = self._listing(url, query, CATALOG_TIMEOUT, "the catalog listing")
        next_url = response.links.get("next", {}).get("url")
        try:
            items = response.json()
        except ValueError:
            items = None
        limit = parse_ratelimit_headers(response.headers)
        interval = limit.window_seconds / limit.limit if limit and limit.limit and limit.window_seconds else None
        wait = float(limit.reset_in_seconds) if limit and limit.remaining == 0 else None
        if not isinstance(items, list):
            return ListingPage([], next_url, [f"a listing page of {self.endpoint} was not a JSON list of models; "
                                              "skipped it"], interval, wait)
        results, skipped = [], []
        for item in items:
            try:
                results.append(self._result(ModelInfo(**item)))
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                skipped.append(f"skipped a listed model ({str(item)[:60]}…): {type(exc).__name__}: {str(exc)[:80]}")
        return ListingPage(results, next_url, skipped, interval, wait)

    # -- planning a download --------------------------------------------------------------------

    def plan(self, model_id: str, file: str = "", without: tuple[str, ...] = ()) -> Plan:
        """`model_id` is `org/name` or `org/name@revision`; `file` a path in the repo, or "" for the
        whole repo (a diffusers folder). `without` names component folders of a whole repo whose weights
        are not fetched (their configs are): a variant's base, whose experts come from single files."""
        repo_id, _, revision = model_id.strip().partition("@")
        if repo_id.count("/") != 1:
            raise HubError(f"{model_id!r} is not a Hugging Face model id (expected owner/name)")
        try:
            info = self._api().model_info(repo_id, revision=revision or None, files_metadata=True)
        except Exception as exc:  # noqa: BLE001
            raise self._explain(exc, repo_id) from None
        tags = list(info.tags or [])
        siblings = {s.rfilename: s for s in info.siblings or []}
        plan = Plan("hf", repo_id, info.sha or revision or "main", repo_id, kind=_kind_from_tags(tags, info.library_name),
                    base_model=_base_from_tags(tags, repo_id))
        if file:
            sibling = siblings.get(file.strip().lstrip("/"))
            if sibling is None:
                raise HubError(f"{repo_id} has no file {file!r}")
            plan.files = [self._planned(sibling, WEIGHT_SUFFIXES)]
            plan.title = f"{repo_id}/{sibling.rfilename}"
            return plan
        plan = self._plan_repo(plan, siblings)
        if without and plan.whole_repo:
            skipped = tuple(f"{folder.strip('/')}/" for folder in without)
            plan.files = [f for f in plan.files  # a weights index without its shards would mislead: config only
                          if not f.path.startswith(skipped) or f.path.endswith("/config.json")]
            plan.title = f"{repo_id} (without the weights of {', '.join(sorted(without))})"
        return plan

    def _plan_repo(self, plan: Plan, siblings: dict) -> Plan:
        names = list(siblings)
        weights = [n for n in names if n.lower().endswith(WEIGHT_SUFFIXES)]
        if "model_index.json" not in names:
            if len(weights) == 1:  # a repo holding one LoRA or checkpoint: just that file
                plan.files = [self._planned(siblings[weights[0]], WEIGHT_SUFFIXES)]
                plan.title = f"{plan.model_id}/{weights[0]}"
                return plan
            raise HubError(f"{plan.model_id} is not a diffusers pipeline (no model_index.json); pick one of its "
                           f"files: {', '.join(weights[:8]) or 'it has no .safetensors or .gguf weights'}")
        safe_folders = {n.rpartition("/")[0] for n in weights}
        pickled = sorted({n.rpartition("/")[0] or "." for n in names if n.lower().endswith(PICKLE_SUFFIXES)
                          and n.rpartition("/")[0] not in safe_folders})
        if pickled:
            raise UnsafeFile(f"{plan.model_id} has only pickle weights (.bin/.pt/.pth) in {', '.join(pickled)}; "
                             "diffbox only loads .safetensors and .gguf. Look for a safetensors version of it.")
        plan.whole_repo = True
        plan.kind = "diffusers"
        allowed = (*WEIGHT_SUFFIXES, *CONFIG_SUFFIXES)
        for name in names:
            if name.lower().endswith(allowed):
                plan.files.append(self._planned(siblings[name], allowed))
        return plan

    @staticmethod
    def _planned(sibling, allowed: tuple[str, ...]) -> PlannedFile:
        path = safe_relative_path(sibling.rfilename, allowed)  # UnsafeFile for .ckpt, traversal, ...
        lfs = sibling.lfs
        return PlannedFile(path=path, size=int(sibling.size or (lfs.size if lfs else 0) or 0),
                           sha256=(lfs.sha256 if lfs else "") or "",
                           git_sha1="" if lfs else (sibling.blob_id or ""))

    # -- downloading ----------------------------------------------------------------------------

    def download(self, plan: Plan, planned: PlannedFile, local_dir: Path, progress_class: type) -> Path:
        """One file of the plan into local_dir (hf_hub_download's own temp file + rename)."""
        try:
            path = hf_hub_download(plan.model_id, planned.path, revision=plan.revision, local_dir=local_dir,
                                   endpoint=self.endpoint, token=self._token() or False, tqdm_class=progress_class)
        except (HubError, Stopped):
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._explain(exc, f"{plan.model_id}/{planned.path}") from None
        return Path(os.fspath(path))
