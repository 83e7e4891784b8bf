"""Drives the emulator with the `tailscale` package from PyPI (an async client written by
others), to prove the emulator answers as Tailscale's API does for a real client.

The package's base URL is fixed to https://api.tailscale.com, so its HTTP session is wrapped
to send every request to the emulator instead. Reads EMULATOR_URL, API_TOKEN, OAUTH_ID,
OAUTH_SECRET, DEVICE_ID from the environment; prints one line per step and exits non-zero on
the first failure.
"""

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta

import aiohttp
from tailscale import Tailscale
from tailscale.exceptions import TailscaleError

BASE = os.environ["EMULATOR_URL"].rstrip("/")


class ToEmulator:
    """Looks like an aiohttp ClientSession to the client; sends requests to the emulator."""

    def __init__(self) -> None:
        self.inner = aiohttp.ClientSession()
        self.requests = 0

    def request(self, method, url, **kwargs):
        self.requests += 1
        target = str(url).replace("https://api.tailscale.com", BASE, 1)
        return self.inner.request(method, target, **kwargs)

    async def close(self) -> None:
        await self.inner.close()


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


async def with_token(session: ToEmulator) -> None:
    ts = Tailscale(api_key=os.environ["API_TOKEN"], session=session)
    device_id = os.environ["DEVICE_ID"]

    devices = await ts.devices()
    check(len(devices) > 0, f"devices() lists {len(devices)} devices")
    device = await ts.device(device_id)
    check(device.device_id == device_id or device.node_id == device_id, "device() by id")

    expiry = datetime.now(UTC) + timedelta(hours=2)
    attrs = await ts.set_device_posture_attribute(
        device_id, "custom:pyclient", value="granted", expiry=expiry, comment="INC-1 from python"
    )
    check("custom:pyclient" in attrs.attributes, "set_device_posture_attribute() answers the attributes")
    attrs = await ts.device_posture_attributes(device_id)
    check(attrs.attributes.get("custom:pyclient") == "granted", "device_posture_attributes() reads it back")
    await ts.delete_device_posture_attribute(device_id, "custom:pyclient")
    attrs = await ts.device_posture_attributes(device_id)
    check("custom:pyclient" not in attrs.attributes, "delete_device_posture_attribute()")

    policy = await ts.policy_file()
    check(policy.etag is not None and policy.etag.startswith('"'), "policy_file() has a quoted ETag")
    check("//" in policy.policy, "policy_file() keeps comments (HuJSON byte for byte)")
    updated = await ts.set_policy_file(policy.policy + "\n// touched by python\n", etag=policy.etag)
    check(updated.etag != policy.etag, "set_policy_file() with If-Match gives a new ETag")
    try:
        await ts.set_policy_file(policy.policy, etag=policy.etag)
        check(False, "a stale ETag is refused")
    except TailscaleError:
        check(True, "a stale ETag is refused (412)")
    validation = await ts.validate_policy_file(updated.policy)
    check(not validation.message, "validate_policy_file() passes the current policy")

    users = await ts.users()
    check(len(users) > 0, f"users() lists {len(users)} users")
    first = next(iter(users.values())) if isinstance(users, dict) else users[0]
    user = await ts.user(first.user_id if hasattr(first, "user_id") else first.id)
    check(user.login_name == first.login_name, "user() by id")

    key = await ts.create_key(description="pyclient", expiry_seconds=600, tags=["tag:ci"], ephemeral=True, preauthorized=True)
    check(bool(key.key) and key.key.startswith("tskey-auth-"), "create_key() shows the secret once")
    again = await ts.key(key.key_id)
    check(not again.key, "key() does not show the secret again")
    await ts.delete_key(key.key_id)
    revoked = await ts.key(key.key_id)
    check(revoked.invalid, "a revoked key reads as invalid")

    hook = await ts.create_webhook(endpoint_url="http://127.0.0.1:9/hook", subscriptions=["policyUpdate"])
    check(bool(hook.secret), "create_webhook() shows the secret")
    hooks = await ts.webhooks()
    check(any(h.endpoint_id == hook.endpoint_id for h in hooks), "webhooks() lists it")
    await ts.delete_webhook(hook.endpoint_id)

    try:
        await ts.device("nonexistent-device")
        check(False, "an unknown device is an error")
    except TailscaleError:
        check(True, "an unknown device is an error (404)")


async def with_oauth(session: ToEmulator) -> None:
    ts = Tailscale(
        oauth_client_id=os.environ["OAUTH_ID"],
        oauth_client_secret=os.environ["OAUTH_SECRET"],
        session=session,
    )
    devices = await ts.devices()
    check(len(devices) > 0, "OAuth client credentials: token minted, devices() works")


async def main() -> None:
    session = ToEmulator()
    try:
        await with_token(session)
        await with_oauth(session)
    finally:
        await session.close()
    print(f"all passed, {session.requests} requests", flush=True)


asyncio.run(main())
