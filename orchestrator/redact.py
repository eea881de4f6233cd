"""Tracking URIs as mlora shows them: without their secrets. The one place a URI is made safe to
print, log, tag or write (sweep.json, the report, the CLI's lines, MLflow tags): the real URI
still goes to the MLflow client, never to a file or a terminal.

    redact_uri("postgresql://u:s3cret@db/mlflow")      -> "postgresql://u:***@db/mlflow"
    redact_uri("https://h/?token=abc&x=1")             -> "https://h/?token=***&x=1"
    redact_text("... connect to postgresql://u:pw@db failed")  -> the same line, every URI in it redacted

It also checks a URI's scheme before a sweep touches anything (check_tracking_uri).
"""
from __future__ import annotations

import re
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "***"
# query parameters that carry a secret: password, token, access_token, api_key, secret, sig, ...
_SECRET_PARAM = re.compile(r"(pass|pwd|token|secret|key|auth|sig|credential)", re.IGNORECASE)
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# schemes MLflow resolves a tracking store for (file paths have none); a typo such as htp:// is refused
TRACKING_SCHEMES = ("file", "sqlite", "http", "https", "databricks", "databricks-uc", "postgresql", "mysql", "mssql", "uc")


def redact_uri(uri: str) -> str:
    """`uri` with the password of user:password@ and the values of secret-looking query params
    replaced by ***; anything that is not a URI is returned as it is."""
    if not isinstance(uri, str) or "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}" if _token_only(userinfo) \
            else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    out = uri if netloc == parts.netloc else uri.replace(parts.netloc, netloc, 1)   # the rest byte for byte
    return out if query == parts.query else out.replace(f"?{parts.query}", f"?{query}", 1)


def _token_only(userinfo: str) -> bool:
    """A bare token before @ (https://TOKEN@host): long enough to be a credential, not a user name."""
    return len(userinfo) >= 20


def redact_text(text: str) -> str:
    """`text` (an error line, a log line) with every URI in it redacted."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def has_inline_secret(uri: str) -> bool:
    return isinstance(uri, str) and redact_uri(uri) != uri


def warn_inline_secret(uri: str, file=None) -> bool:
    """One warning line when `uri` carries a password or token; True if it did."""
    if not has_inline_secret(uri):
        return False
    print(f"mlora: warning: the tracking URI {redact_uri(uri)} carries a password or token inline: set "
          "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead; mlora shows and "
          "stores it redacted", file=file or sys.stderr)
    return True


def check_tracking_uri(uri: str) -> str:
    """`uri`, or ValueError (one line, redacted) when its scheme is not one MLflow tracks to."""
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme and scheme.split("+", 1)[0] not in TRACKING_SCHEMES:
        raise ValueError(f"tracking URI {redact_uri(uri)}: unknown scheme {scheme!r} "
                         f"(have {', '.join(TRACKING_SCHEMES)}, or a local path)")
    return uri


def redact_state(state: dict) -> dict:
    """A sweep record as written to sweep.json and the report: its tracking URIs redacted."""
    out = dict(state)
    if "tracking_uri" in out:
        out["tracking_uri"] = redact_uri(out["tracking_uri"])
    exp = out.get("experiment")
    if isinstance(exp, dict) and isinstance(exp.get("tracking"), dict) and exp["tracking"].get("uri"):
        out["experiment"] = {**exp, "tracking": {**exp["tracking"], "uri": redact_uri(exp["tracking"]["uri"])}}
    return out
