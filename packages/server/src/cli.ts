#!/usr/bin/env node
import { MeshError } from '@meshmq/shared';
import { runTokenCommand, TOKEN_HELP } from './auth/token-command.js';
import { HELP, loadConfig } from './config.js';
import { BrokerNode } from './node.js';

/** `meshmq token ...`: prints a token; bad input exits 2 like bad node options. */
async function token(args: string[]): Promise<void> {
  try {
    process.stdout.write(await runTokenCommand(args, process.env));
  } catch (err) {
    const error = MeshError.from(err);
    process.stderr.write(`meshmq token: ${error.message}\n\n${TOKEN_HELP}`);
    process.exit(error.code === 'internal' ? 1 : 2);
  }
}

/** Log fields for what a library passed to console.error or console.warn. */
function logFieldsOf(args: unknown[]): Record<string, unknown> {
  const err = args.find((a) => a instanceof Error);
  const text = args.filter((a) => !(a instanceof Error)).map(String);
  return { ...(err ? { err } : {}), ...(text.length > 0 ? { printed: text.join(' ') } : {}) };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  // `pnpm start -- --port 9000` passes the `--` through.
  if (args[0] === '--') args.shift();
  if (args[0] === 'token') return token(args.slice(1));
  let loaded: ReturnType<typeof loadConfig>;
  try {
    loaded = loadConfig(args, process.env);
  } catch (err) {
    process.stderr.write(`meshmq: ${(err as Error).message}\n\n${HELP}`);
    process.exit(2);
  }
  if (loaded.help) {
    process.stdout.write(HELP);
    return;
  }
  const node = new BrokerNode(loaded.config);
  // What libraries print (lmdb prints a failed commit's cause) goes into the log as lines like every other.
  console.error = (...args: unknown[]) => node.logger.error(logFieldsOf(args), 'printed by a library');
  console.warn = (...args: unknown[]) => node.logger.warn(logFieldsOf(args), 'printed by a library');
  process.on('unhandledRejection', (err) => {
    // lmdb rejects an internal promise of every failed commit as well; the write that failed has reported it.
    if (err instanceof Error && 'commitError' in err) return;
    // A rejected promise nobody awaited is a bug to fix, not a reason to drop every connection.
    node.logger.error({ err }, 'unhandled rejection');
  });
  try {
    await node.start();
  } catch (err) {
    node.logger.fatal({ err }, `cannot start: ${MeshError.from(err).message}`);
    process.exit(1);
  }
  const shutdown = (signal: string) => {
    node.logger.info({ signal }, 'shutting down');
    node.stop().then(
      () => process.exit(0),
      (err) => {
        node.logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

void main();
