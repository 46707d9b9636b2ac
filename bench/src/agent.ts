/**
 * A load agent: a child process of the harness running one pipeline (one
 * publisher and one consumer of one queue) so that the harness process is
 * not the client and several pipelines use several processes. Protocol over
 * the IPC channel: harness → {type:'prepare', job}; agent → {type:'ready'}
 * once connected, warmed up and consuming; harness → {type:'go'};
 * agent → {type:'result', result}; or agent → {type:'error', message}.
 */

import { preparePipeline } from './pipeline.js';
import type { PipelineJob } from './pipeline-types.js';

let job: PipelineJob | undefined;
let run: (() => Promise<void>) | undefined;

const send = (msg: unknown) => process.send?.(msg);

process.on('message', (msg: { type: string; job?: PipelineJob }) => {
  if (msg.type === 'prepare' && msg.job) {
    job = msg.job;
    preparePipeline(job).then(
      (go) => {
        run = async () => {
          const result = await go.go();
          await new Promise<void>((resolve) => process.send?.({ type: 'result', result }, () => resolve()));
          await go.close();
        };
        send({ type: 'ready' });
      },
      (err: unknown) => fail(err),
    );
  } else if (msg.type === 'go') {
    if (!run) return fail(new Error('go before ready'));
    run().then(
      () => process.exit(0),
      (err: unknown) => fail(err),
    );
  }
});

process.on('disconnect', () => process.exit(0));

function fail(err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  process.send?.({ type: 'error', message: `${job?.driver.kind ?? 'agent'}: ${message}` }, () => process.exit(1));
}
