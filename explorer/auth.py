"""Who is looking, and what they may see.

Production: put OIDC in front with ``st.login`` (configure ``[auth]`` in ``.streamlit/secrets.toml``);
the signed-in e-mail is the user, and ``LETL_EXPLORER_STEWARDS`` (comma-separated e-mails) get the
steward role. The embedded default: optional passwords, ``LETL_EXPLORER_PASSWORD`` for analysts and
``LETL_EXPLORER_STEWARD_PASSWORD`` for stewards (or ``password`` / ``steward_password`` under
``[explorer]`` in ``st.secrets``). With no password set, everyone is an analyst, and only
de-identified datasets are shown.
"""

import hmac
from dataclasses import dataclass

import streamlit as st

from letl.lake.config import setting
from letl.lake.lake import current_user


@dataclass(frozen=True)
class Viewer:
    user: str
    role: str


def _setting(env: str, secret: str) -> str | None:
    value = setting(env)
    if value:
        return value
    try:
        return st.secrets.get("explorer", {}).get(secret)
    except FileNotFoundError:  # no secrets.toml at all
        return None


def role_for_password(entered: str, analyst: str | None, steward: str | None) -> str | None:
    """The role a password opens, compared in constant time; None when it opens nothing."""
    if steward and hmac.compare_digest(entered.encode(), steward.encode()):
        return "steward"
    if analyst and hmac.compare_digest(entered.encode(), analyst.encode()):
        return "analyst"
    return None


def _oidc_viewer() -> Viewer | None:
    try:
        if not st.user.is_logged_in:
            return None
    except (AttributeError, KeyError):
        return None
    email = str(st.user.get("email") or st.user.get("sub") or "unknown")
    stewards = {e.lower() for e in setting("LETL_EXPLORER_STEWARDS")}
    return Viewer(email, "steward" if email.lower() in stewards else "analyst")


def viewer() -> Viewer:
    """The signed-in viewer; shows the password form and stops the page until one is given."""
    signed_in = _oidc_viewer()
    if signed_in:
        return signed_in
    analyst = _setting("LETL_EXPLORER_PASSWORD", "password")
    steward = _setting("LETL_EXPLORER_STEWARD_PASSWORD", "steward_password")
    local_user = setting("LETL_EXPLORER_USER") or current_user()
    if not analyst and not steward:
        return Viewer(local_user, "analyst")
    if "letl_role" in st.session_state:
        return Viewer(st.session_state["letl_user"], st.session_state["letl_role"])
    st.title("LETL explorer")
    with st.form("sign_in"):
        entered = st.text_input("Password", type="password")
        # A shared password says nothing about who ran a query: the audit log needs a name.
        name = st.text_input("Your name (for the access log)", max_chars=64)
        if st.form_submit_button("Sign in"):
            role = role_for_password(entered, analyst, steward)
            if role and name.strip():
                st.session_state["letl_role"], st.session_state["letl_user"] = role, name.strip()
                st.rerun()
            st.error("Wrong password." if not role else "Give your name: every query is logged with it.")
    st.caption("For production, put single sign-on in front with st.login (OIDC); see explorer/README.md.")
    st.stop()
