/**
 * Every workload `pnpm bench` knows, in the order they run. Add a workload by
 * writing `src/workloads/<name>.ts` exporting a `Workload` (see
 * ../workload.ts) and listing it here.
 */
import type { Workload } from '../workload.js';

export const WORKLOADS: Workload[] = [];
