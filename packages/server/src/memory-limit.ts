import { totalmem } from 'node:os';

/** The memory the node may use: its cgroup's limit when it has one, else the machine's. */
export function memoryLimit(): number {
  const constrained = process.constrainedMemory?.() ?? 0;
  return constrained > 0 && constrained < Number.MAX_SAFE_INTEGER ? constrained : totalmem();
}
