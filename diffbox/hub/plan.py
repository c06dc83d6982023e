"""What a download will fetch, worked out from the source's API before any byte moves.

Both hub clients turn a request (source, model id, file) into a Plan: the exact revision, every
file with its size and the hash to verify it against. The download manager stores the plan,
so an interrupted download resumes against the same revision after a restart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class PlannedFile:
    path: str              # HF: path in the repo; Civitai: the (sanitised) file name
    size: int = 0          # bytes; Civitai's is approximate until the file host answers
    sha256: str = ""       # the source's hash, lower-case hex; "" when the source gives none
    git_sha1: str = ""     # HF small (non-LFS) files are named by their git blob id instead
    url: str = ""          # Civitai: the API download URL (resolved to a signed URL per attempt)
    done: bool = False     # fetched and verified into the staging folder
    actual_sha256: str = ""  # computed while fetching/verifying; what the library records


@dataclass
class Plan:
    source: str            # "hf" | "civitai"
    model_id: str          # HF repo id / Civitai model id
    revision: str          # HF commit sha / Civitai version id
    title: str             # what the downloads table shows
    files: list[PlannedFile] = field(default_factory=list)
    kind: str = ""         # the source's idea of the kind; the file's own keys decide in the end
    base_model: str = "unknown"
    whole_repo: bool = False  # a diffusers folder: every config and weights file of the repo

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        """Tolerates fields it does not know (a record written by a newer diffbox)."""
        known = {f.name for f in fields(PlannedFile)}
        files = [PlannedFile(**{k: v for k, v in f.items() if k in known}) for f in data.get("files", [])]
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)} and k != "files"},
                   files=files)
