import type { Alarm, ClusterAlarms } from '@meshmq/shared';
import { paths } from './router.svelte.js';

/** An alarm with the node that raised it. */
export interface NodeAlarm extends Alarm {
  node: string;
}

const SEVERITY_ORDER: Record<Alarm['severity'], number> = { critical: 0, warning: 1 };

/** Every node's alarms in one list: critical first, then oldest first. */
export function alarmLines(cluster: ClusterAlarms): NodeAlarm[] {
  return cluster.nodes
    .flatMap(({ node, alarms }) => alarms.map((alarm) => ({ ...alarm, node })))
    .sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || a.since - b.since || a.node.localeCompare(b.node));
}

/**
 * The console page an alarm's action points to, when it names one: the
 * topic's dead letters, or the topic of a group that is behind. Topic and
 * group names may both hold `:`, so `group_behind:<topic>:<group>` names its
 * topic only when it splits one way.
 */
export function alarmPage(id: string): { href: string; label: string } | undefined {
  const [kind, ...rest] = id.split(':');
  if (kind === 'dead_letters' && rest.length > 0) return { href: paths.deadLetters(rest.join(':')), label: 'Dead letters' };
  if (kind === 'group_behind') {
    return rest.length === 2 ? { href: paths.topic(rest[0]!), label: 'Topic and groups' } : { href: paths.topics, label: 'Topics' };
  }
  return undefined;
}
