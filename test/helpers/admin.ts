import type { GroupInfo, PendingEntry } from '@meshmq/shared';

/**
 * Reads a node's admin API (docs/api.md) for the state of a topic or group.
 * Tests use it to check a claim about deliveries against what the broker
 * itself holds (subscribers; what is pending, leased, delayed, redelivered)
 * instead of waiting a while and seeing that nothing arrived.
 */

export type GroupState = GroupInfo & { members: number; ready: number };

export type PendingState = PendingEntry & { state: 'leased' | 'delayed' | 'due' };

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Subscribers the node counts for `topic` (GET /api/topics/:topic). */
export async function topicSubscribers(baseUrl: string, topic: string): Promise<number> {
  return (await getJson<{ topic: { subscribers: number } }>(`${baseUrl}/api/topics/${encodeURIComponent(topic)}`)).topic.subscribers;
}

/** The group's state as GET /api/topics/:topic reports it; throws when the group does not exist. */
export async function groupState(baseUrl: string, topic: string, group: string): Promise<GroupState> {
  const view = await getJson<{ groups: GroupState[] }>(`${baseUrl}/api/topics/${encodeURIComponent(topic)}`);
  const state = view.groups.find((g) => g.group === group);
  if (!state) throw new Error(`group '${group}' of '${topic}' not in ${JSON.stringify(view.groups)}`);
  return state;
}

/** The group's pending entries, oldest first, each with the state the node gives it. */
export async function pendingEntries(baseUrl: string, topic: string, group: string): Promise<PendingState[]> {
  const url = `${baseUrl}/api/topics/${encodeURIComponent(topic)}/groups/${encodeURIComponent(group)}/pending`;
  return (await getJson<{ entries: PendingState[] }>(url)).entries;
}
