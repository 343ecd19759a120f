"""Checks on what users send before anything is stored: images, ZIP archives and URLs.

Pure Python (standard library and Pillow, no Django), so the web layer can call it and it can be
tested alone. Every refusal is a `RejectedInput` carrying a code, a message and an HTTP status.
"""

from .archives import extract_archive, is_os_junk, safe_member_name, strip_unsafe_chars
from .errors import RejectedInput
from .images import ALLOWED_FORMATS, ImageInfo, inspect_image
from .urls import (
    FetchedFile,
    PostAnswer,
    check_url,
    fetch_url,
    is_forbidden_address,
    is_metadata_address,
    post_json,
    split_urls,
)

__all__ = [
    "ALLOWED_FORMATS",
    "FetchedFile",
    "PostAnswer",
    "ImageInfo",
    "RejectedInput",
    "check_url",
    "extract_archive",
    "fetch_url",
    "inspect_image",
    "is_os_junk",
    "is_forbidden_address",
    "is_metadata_address",
    "post_json",
    "safe_member_name",
    "split_urls",
    "strip_unsafe_chars",
]
