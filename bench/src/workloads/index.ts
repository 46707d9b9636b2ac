/**
 * Every workload `pnpm bench` knows, in the order they run. Add a workload by
 * writing `src/workloads/<name>.ts` exporting a `Workload` (see
 * ../workload.ts) and listing it here.
 */
import type { Workload } from '../workload.js';
import { burst } from './burst.js';
import { connections } from './connections.js';
import { durable } from './durable.js';
import { fanout } from './fanout.js';
import { latency } from './latency.js';
import { scaling } from './scaling.js';

export const WORKLOADS: Workload[] = [durable, latency, scaling, fanout, burst, connections];
