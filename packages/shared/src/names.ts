/**
 * Naming rules for topics and groups.
 *
 * A topic name is 1-200 characters of letters, digits and `_ - . :`, and
 * starts with a letter, digit or `_`. Names starting with `$` are reserved for
 * topics the broker writes itself; the only such family today is dead-letter
 * topics: the dead-letter topic of `orders` is `$dlq.orders`. Clients may read
 * and subscribe to system topics but may not publish to them.
 */
export const TOPIC_NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$/;
export const GROUP_NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}$/;
export const DEAD_LETTER_PREFIX = '$dlq.';

export function isValidTopicName(name: string): boolean {
  return TOPIC_NAME_PATTERN.test(name);
}

/** True for names a client may subscribe to or read: user topics and system topics. */
export function isReadableTopicName(name: string): boolean {
  return isValidTopicName(name) || isDeadLetterTopic(name);
}

export function isDeadLetterTopic(name: string): boolean {
  return name.startsWith(DEAD_LETTER_PREFIX) && isValidTopicName(name.slice(DEAD_LETTER_PREFIX.length));
}

export function deadLetterTopicOf(topic: string): string {
  return DEAD_LETTER_PREFIX + topic;
}

/** The topic a dead-letter topic collects for, or undefined for other names. */
export function sourceTopicOf(deadLetterTopic: string): string | undefined {
  return isDeadLetterTopic(deadLetterTopic) ? deadLetterTopic.slice(DEAD_LETTER_PREFIX.length) : undefined;
}

export function isValidGroupName(name: string): boolean {
  return GROUP_NAME_PATTERN.test(name);
}

/**
 * The one key for group `group` of topic `topic` in maps and records that
 * hold groups of several topics (`<topic>\u0000<group>`, as in the admin
 * API's activity counts). NUL occurs in no topic or group name, so no two
 * groups share a key.
 */
export function groupKey(topic: string, group: string): string {
  return `${topic}\u0000${group}`;
}
