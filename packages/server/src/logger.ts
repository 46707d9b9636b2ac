import { type Logger, pino } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'auto' | 'json' | 'pretty';

/**
 * The node's logger: JSON lines for machines, or pino-pretty's readable
 * lines for people (`pretty`, or `auto` when stdout is a terminal). Every
 * line carries the node's id as `node`; lines about another node name it
 * `peer`.
 */
export function createLogger(level: string, nodeId: string, format: LogFormat = 'auto'): Logger {
  const readable = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
  const options = { level, base: { node: nodeId } };
  return readable ? pino(options, pretty({ colorize: process.stdout.isTTY === true, sync: true })) : pino(options);
}
