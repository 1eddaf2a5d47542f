#!/usr/bin/env bash
# Send a PagerDuty v3 webhook the way PagerDuty does: the body compact JSON as-is, signed with the subscription's
# signing secret: X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the exact body bytes>.
#   examples/sign-pagerduty.sh BODY.json SECRET_FILE URL
# e.g. examples/sign-pagerduty.sh pd.json "$FREEZEFRAME_PAGERDUTY_SECRETS_FILE" "$FREEZEFRAME_LAMBDA_ENDPOINT/v1/alerts/pagerduty"
set -euo pipefail
body="$1" secret_file="$2" url="$3"
signature=$(openssl dgst -sha256 -hmac "$(head -n1 "$secret_file")" -hex < "$body" | sed 's/^.*= //')
curl -fsS -X POST "$url" -H 'Content-Type: application/json' \
     -H "X-PagerDuty-Signature: v1=$signature" -H "X-Webhook-Id: $(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
     --data-binary @"$body"
echo
