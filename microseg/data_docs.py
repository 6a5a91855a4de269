"""Great Expectations Data Docs that work without internet.

GX's pages load jQuery, Bootstrap, bootstrap-table and Font Awesome from CDNs; offline the
index is unstyled and lists no validation results (its tables are filled by JavaScript). After
each build the files in data_docs_assets/ (see its NOTICE.md) are copied into the site's
static/vendor folder and every page is pointed at them; tags of assets not shipped are removed.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).with_name("data_docs_assets")
VENDOR = Path("static") / "vendor"

# CDN address (without query) -> the shipped copy, relative to ASSETS
LOCAL_COPIES = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap-4.3.1.min.css"
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap-4.3.1.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper-1.12.9.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table-1.19.1.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table-1.19.1.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js": "bootstrap-table-filter-control-1.19.1.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css": "bootstrap-table-filter-control-1.19.1.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css": "bootstrap-table-filter-control-1.19.1.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css": "bootstrap-datepicker-1.9.0.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js": "bootstrap-datepicker-1.9.0.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "css/fontawesome-6.6.0.min.css"
    ),
}
# GX's logo comes from its S3 bucket; the site ships the same picture
LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png"
LOCAL_LOGO = Path("static") / "images" / "logo-long.png"
# any other <script src> or stylesheet <link> to the internet: not shipped, removed
REMOTE_TAG = re.compile(
    r'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>|<link[^>]*\shref="https?://[^"]*"[^>]*>'
)
REMOTE_URL = re.compile(r'"(https?://[^"?]*)(\?[^"]*)?"')


def _localized(html: str, to_site: str) -> str:
    """The page with every CDN asset pointed at the site's copy (`to_site`: the relative
    path from the page's folder to the site root)."""

    def swap(match: re.Match[str]) -> str:
        url = match.group(1)
        if url in LOCAL_COPIES:
            return f'"{to_site}/{(VENDOR / LOCAL_COPIES[url]).as_posix()}"'
        if url == LOGO:
            return f'"{to_site}/{LOCAL_LOGO.as_posix()}"'
        return match.group(0)

    html = REMOTE_URL.sub(swap, html)

    def drop_remote(match: re.Match[str]) -> str:
        tag = match.group(0)
        is_asset = tag.startswith("<script") or "stylesheet" in tag
        return "" if is_asset else tag

    return REMOTE_TAG.sub(drop_remote, html)


def localize_data_docs(site: Path) -> None:
    """Copy the assets into `site` and point its pages at them."""
    if not site.is_dir():
        return
    for asset in ASSETS.rglob("*"):
        if asset.is_file():  # copyfile and mkdir: the copies take the umask, not the source mode
            copy = site / VENDOR / asset.relative_to(ASSETS)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(asset, copy)
    for page in site.rglob("*.html"):
        to_site = Path(os.path.relpath(site, page.parent)).as_posix()
        text = page.read_text("utf-8")
        localized = _localized(text, to_site)
        if localized != text:
            page.write_text(localized, "utf-8")
