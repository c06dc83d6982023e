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
