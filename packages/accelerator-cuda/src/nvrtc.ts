/**
 * Compiling a kernel file to a CUBIN with NVRTC for one architecture. The options are the ones
 * scripts/compile-kernels.mjs gives nvcc in CI (C++17, no fast math), so what CI compiled is what
 * users compile; headers are handed over in memory so no include path is needed on the user's machine.
 */
import { check, CudaError } from "./check";
import type { Ptr } from "./ffi/cudart";
import { NVRTC_ERROR_COMPILATION, nvrtc } from "./ffi/nvrtc";
import type { KernelSource } from "./kernelSource";

export class KernelCompileError extends Error {
  constructor(
    message: string,
    readonly kernel: string,
    readonly arch: string,
    readonly log: string,
  ) {
    super(message);
    this.name = "KernelCompileError";
  }
}

/** The NVRTC options for `arch` ("sm_90"): part of the cache key, so changing them recompiles. */
export function nvrtcOptions(arch: string): string[] {
  if (!/^sm_\d+a?$/.test(arch)) throw new TypeError(`arch: got ${JSON.stringify(arch)}; expected a name like "sm_90"`);
  return [`--gpu-architecture=${arch}`, "-std=c++17"];
}

/** "13.0" */
export function nvrtcVersion(): string {
  const major: [number] = [0];
  const minor: [number] = [0];
  check(nvrtc().nvrtcVersion(major, minor), "nvrtcVersion", "nvrtc");
  return `${major[0]}.${minor[0]}`;
}

function programLog(prog: Ptr): string {
  const n = nvrtc();
  const size: [number | bigint] = [0];
  if (n.nvrtcGetProgramLogSize(prog, size) !== 0) return "(the log could not be read)";
  const buf = new Uint8Array(Number(size[0]));
  if (buf.length === 0 || n.nvrtcGetProgramLog(prog, buf) !== 0) return "";
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end)).trim();
}

/** Compiles `ks` for `arch` and returns the CUBIN; a compile error carries NVRTC's log. */
export function compileWithNvrtc(ks: KernelSource, arch: string): Uint8Array {
  const n = nvrtc();
  const names = Object.keys(ks.headers);
  const bodies = names.map((h) => ks.headers[h]);
  const prog: [Ptr | null] = [null];
  check(
    n.nvrtcCreateProgram(prog, ks.source, `${ks.name}.cu`, names.length, names.length ? bodies : null, names.length ? names : null),
    "nvrtcCreateProgram",
    "nvrtc",
    `${ks.name}.cu`,
  );
  const p = prog[0]!;
  try {
    const options = nvrtcOptions(arch);
    const code = n.nvrtcCompileProgram(p, options.length, options);
    if (code !== 0) {
      const log = programLog(p);
      const what = code === NVRTC_ERROR_COMPILATION ? "does not compile" : `could not be compiled (NVRTC status ${code})`;
      throw new KernelCompileError(
        `kernels/${ks.name}.cu ${what} for ${arch} with options ${options.join(" ")}:\n${log || "(empty log)"}`,
        ks.name,
        arch,
        log,
      );
    }
    const size: [number | bigint] = [0];
    check(n.nvrtcGetCUBINSize(p, size), "nvrtcGetCUBINSize", "nvrtc", `${ks.name}.cu`);
    const cubin = new Uint8Array(Number(size[0]));
    if (cubin.length === 0) {
      throw new CudaError(`NVRTC produced an empty CUBIN for ${ks.name}.cu (${arch})`, "nvrtc", "nvrtcGetCUBIN", -1, "empty");
    }
    check(n.nvrtcGetCUBIN(p, cubin), "nvrtcGetCUBIN", "nvrtc", `${ks.name}.cu`);
    return cubin;
  } finally {
    n.nvrtcDestroyProgram([p]);
  }
}
