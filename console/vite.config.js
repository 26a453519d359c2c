// Built by control-plane/build.rs into the build's own output folder (KILN_CONSOLE_OUT) and
// embedded in the control plane's binary; `npm run build` alone writes dist/.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/console/',
  build: {
    outDir: process.env.KILN_CONSOLE_OUT || 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // One small bundle; no source maps shipped in the binary.
    sourcemap: false,
    reportCompressedSize: false,
  },
});
