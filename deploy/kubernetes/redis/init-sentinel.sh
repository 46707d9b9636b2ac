#!/bin/sh
# Init container of each Sentinel pod. Sentinel rewrites its configuration file
# as it learns (the current primary, the other Sentinels, its own id), so the
# file lives on the pod's volume and is written only on the first start: from
# sentinel.conf, monitoring the primary another Sentinel names, or Redis pod 0
# when none answers.
set -eu
conf=/data/sentinel.conf
if [ ! -f "$conf" ]; then
  primary=""
  for i in 0 1 2; do
    [ "meshmq-sentinel-$i" = "$POD_NAME" ] && continue
    primary=$(timeout 5 redis-cli -h "meshmq-sentinel-$i.meshmq-sentinel" -p 26379 --raw SENTINEL get-master-addr-by-name meshmq 2>/dev/null | head -n 1 || true)
    [ -n "$primary" ] && break
  done
  {
    sed "s/^sentinel monitor meshmq [^ ]*/sentinel monitor meshmq ${primary:-meshmq-redis-0.meshmq-redis}/" /config/sentinel.conf
    echo "sentinel announce-ip $POD_NAME.meshmq-sentinel"
    echo "sentinel auth-pass meshmq $REDIS_PASSWORD"
  } > "$conf.new"
  mv "$conf.new" "$conf"
fi
# Sentinel resolves the primary's name as it reads the file, and exits if it
# cannot: wait until the name resolves (the Redis pod exists).
primary=$(awk '$1 == "sentinel" && $2 == "monitor" && $3 == "meshmq" { print $4 }' "$conf")
until getent hosts "$primary" > /dev/null; do
  echo "waiting for $primary to resolve"
  sleep 2
done
