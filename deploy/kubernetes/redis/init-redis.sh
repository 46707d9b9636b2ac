#!/bin/sh
# Init container of each Redis pod: writes the configuration redis-server runs
# with, /run/redis/redis.conf: redis.conf, this pod's DNS name to announce (its
# IP changes when it restarts), the password, and, unless this pod is the
# primary, the primary to replicate. The primary is the one the Sentinels
# name; when no Sentinel answers (the very first start), pod 0.
set -eu
self="$POD_NAME.meshmq-redis"
primary=""
for i in 0 1 2; do
  primary=$(timeout 5 redis-cli -h "meshmq-sentinel-$i.meshmq-sentinel" -p 26379 --raw SENTINEL get-master-addr-by-name meshmq 2>/dev/null | head -n 1 || true)
  [ -n "$primary" ] && break
done
primary="${primary:-meshmq-redis-0.meshmq-redis}"
{
  cat /config/redis.conf
  echo "replica-announce-ip $self"
  echo "requirepass $REDIS_PASSWORD"
  echo "masterauth $REDIS_PASSWORD"
  [ "$primary" = "$self" ] || echo "replicaof $primary 6379"
} > /run/redis/redis.conf
echo "$self: primary is $primary"
