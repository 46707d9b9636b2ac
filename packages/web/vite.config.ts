import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vite';

// `pnpm --filter @meshmq/web dev` serves the console with hot reload and
// forwards the admin API and the WebSocket endpoint to a running node.
const node = process.env.MESHMQ_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [svelte()],
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022', chunkSizeWarningLimit: 1024 },
  server: {
    proxy: {
      '/api': node,
      '/healthz': node,
      '/ws': { target: node.replace(/^http/, 'ws'), ws: true },
    },
  },
});
