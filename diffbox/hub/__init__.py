"""The model hub: Hugging Face and Civitai search, background downloads, and the local library.

Errors a user can fix (a missing token, a model that does not exist, a refused file type) are
HubError with a message meant to be shown as is; TransientError is worth retrying (network, 429, 5xx).
"""


class HubError(Exception):
    """A problem the user can understand and act on; str(error) is the sentence to show."""

    discard = False  # True when the partial download is worthless (hash mismatch, refused content)


class TransientError(HubError):
    """Network trouble, rate limits and server errors: retried with backoff before it is shown."""


class Stopped(Exception):
    """Raised from a progress callback to stop a transfer; never shown as an error."""


class Cancelled(Stopped):
    """The user cancelled the download."""


class Interrupted(Stopped):
    """The app is stopping: the download is left as it is, to resume at the next start."""


class RateLimited(TransientError):
    """HTTP 429: the hub wants us to wait `retry_after` seconds (None: it did not say)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(headers, fallback: float | None = None) -> float | None:
    """Seconds from a Retry-After header (seconds form; the date form is rare on APIs), else `fallback`."""
    value = (headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else fallback
    except ValueError:
        return fallback


class ListingPage:
    """One page of a hub's model listing, as a catalog walk stores it."""

    def __init__(self, results: list[dict], next_cursor: str | None, skipped: list[str],
                 interval: float | None = None, wait: float | None = None):
        self.results = results            # search-result dicts
        self.next_cursor = next_cursor    # None: this was the last page
        self.skipped = skipped            # one reason per item (or page) left out
        self.interval = interval          # seconds between requests the hub's advertised limit allows
        self.wait = wait                  # seconds to wait before the next request (the window is used up)
