#!/usr/bin/env bash
# Walks through what the gateway decides for the example services, one request at a time.
set -euo pipefail
tollgate=${1:-target/release/tollgate}
here=$(cd "$(dirname "$0")" && pwd)

# Quotes an argument the way a person would type it.
quote() {
  case $1 in
    *[!A-Za-z0-9_./:=-]*) printf " '%s'" "$1" ;;
    *) printf ' %s' "$1" ;;
  esac
}

show() {
  local title=$1 config=$2; shift 2
  printf '\n\033[1m== %s\033[0m\n$ tollgate explain' "$title"
  for arg in "$@"; do quote "$arg"; done
  printf '\n'
  "$tollgate" explain --format text --config "$here/$config" "$@"
}

echo "tollgate explain: the decisions APIcast would make, without contacting anything."
echo "Configs: examples/sendgrid.json (app_id/app_key renamed api_user/api_key, in the query)"
echo "         examples/twitter.json  (app id/key in X-App-Id/X-App-Key headers, 'last' rules)"

show "SendGrid-like: send mail" sendgrid.json \
  -X POST 'http://api.sendgrid.example/api/mail.send.json?api_user=acme&api_key=s3cr%2Bt'
show "SendGrid-like: stats with aggregate=1 match two rules, usage is summed" sendgrid.json \
  'http://api.sendgrid.example/api/stats.get.json?aggregate=1&api_user=acme&api_key=k'
show "SendGrid-like: api_key missing -> the service's JSON error" sendgrid.json \
  'http://api.sendgrid.example/v3/templates?api_user=acme'
show "SendGrid-like: credentials in a form body" sendgrid.json \
  -X PUT -d 'api_user=acme&api_key=k' 'http://api.sendgrid.example/v3/marketing/contacts'
show "SendGrid-like: unknown endpoint" sendgrid.json \
  -X DELETE 'http://api.sendgrid.example/v3/unknown?api_user=acme&api_key=k'
show "Twitter-like: a specific 'last' rule stops evaluation" twitter.json \
  -H 'X-App-Id: app-1' -H 'X-App-Key: key-1' 'http://api.twitter.example/1.1/statuses/show/42.json'
show "Twitter-like: without its q= argument, search falls to the generic read rule" twitter.json \
  -H 'X-App-Id: app-1' -H 'X-App-Key: key-1' 'http://api.twitter.example/1.1/search/tweets.json'
show "Twitter-like: path normalised as NGINX does (//, .., %2F)" twitter.json \
  -H 'x_app_id: app-1' -H 'X-APP-KEY: key-1' 'http://api.twitter.example//2/x/..%2Ftweets/7'
show "Twitter-like: no credentials -> Porta's 403" twitter.json \
  'http://api.twitter.example/2/tweets/7'
show "Unknown host -> 404, empty body" twitter.json 'http://nobody.example/'
