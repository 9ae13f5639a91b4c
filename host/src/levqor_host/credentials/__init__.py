"""Credentials beyond storage: "Connect" (OAuth2 authorization code with PKCE), the refresh of
connected accounts under a lock, and the credential resolver runs and polls are handed.

No Flask here: the routes in :mod:`levqor_host.web.oauth` call :class:`OAuthService`."""

from levqor_host.credentials.oauth import OAuthService, UserCredentials

__all__ = ["OAuthService", "UserCredentials"]
