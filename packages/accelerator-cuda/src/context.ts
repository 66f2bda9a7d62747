/**
 * Everything Fulgur keeps per GPU, created on first use of that GPU: its properties, the compute
 * stream, the allocator, the pinned staging ring, the device error flag and the loaded kernel
 * modules. One context per device index per process; the backend, the accelerator and the NCCL
 * process group all reach the device through it.
 */
import { DeviceAllocator } from "./allocator";
import { archOf, deviceProperties, setCurrentDevice, type DeviceProperties } from "./device";
import { DeviceStatus } from "./deviceStatus";
import { KernelCache } from "./kernelCache";
import { kernelSource } from "./kernelSource";
import { KernelModule } from "./launch";
import { compileWithNvrtc, nvrtcOptions, nvrtcVersion } from "./nvrtc";
import { PinnedStaging } from "./pinned";
import { Stream } from "./stream";

export class DeviceContext {
  readonly props: DeviceProperties;
  readonly arch: string;
  readonly label: string;
  /** Every tensor op of this device runs here, in program order (see stream.ts). */
  readonly compute: Stream;
  readonly allocator: DeviceAllocator;
  /** Host<->device copies of fromHost/read go through these pinned slots. */
  readonly staging: PinnedStaging;
  readonly status: DeviceStatus;
  private hostCopyStream: Stream | null = null;
  private uploadStream: Stream | null = null;
  private besideStream: Stream | null = null;
  private readonly modules = new Map<string, KernelModule>();
  private compilerVersion: string | null = null;

  constructor(
    readonly index: number,
    private readonly cache = new KernelCache(),
  ) {
    setCurrentDevice(index);
    this.props = deviceProperties(index);
    this.arch = archOf(this.props.computeCapability);
    this.label = `cuda:${index} (${this.props.name})`;
    this.compute = Stream.create(index, `compute stream of cuda:${index}`);
    this.allocator = new DeviceAllocator(index, this.compute, this.label);
    this.staging = new PinnedStaging(this.compute);
    this.status = new DeviceStatus(this.allocator, this.compute);
  }

  /**
   * Downloads into pinned host memory that should run beside compute (offloaded gradients) go
   * here, each ordered after the compute work before it by an event; created on first use.
   */
  get hostCopies(): Stream {
    this.hostCopyStream ??= Stream.create(this.index, `host copy stream of cuda:${this.index}`);
    return this.hostCopyStream;
  }

  /**
   * Uploads from pinned host memory (offloaded slices going up to compute) go here, apart from the
   * downloads of `hostCopies`, so the two directions use both copy engines and neither waits behind
   * the other; created on first use. See [Note: uploads on their own stream] in cudaBackend.ts.
   */
  get uploads(): Stream {
    this.uploadStream ??= Stream.create(this.index, `upload stream of cuda:${this.index}`);
    return this.uploadStream;
  }

  /**
   * Casts that may run beside compute (`CudaBackend.copyBeside`: a unit's autocast copies made
   * again while the unit after it runs its backward); created on first use.
   */
  get beside(): Stream {
    this.besideStream ??= Stream.create(this.index, `beside-compute stream of cuda:${this.index}`);
    return this.besideStream;
  }

  /** Blocks until the uploads queued so far have read their host memory (before it is unpinned). */
  finishUploads(): void {
    this.uploadStream?.synchronize();
  }

  /** Makes this device current (kernel launches and module loads target the current device). */
  makeCurrent(): void {
    setCurrentDevice(this.index);
  }

  /** The compiled kernels of kernels/<name>.cu, compiled or read from the cache on first use. */
  module(name: string): KernelModule {
    let m = this.modules.get(name);
    if (m === undefined) {
      this.makeCurrent();
      const source = kernelSource(name);
      this.compilerVersion ??= `nvrtc ${nvrtcVersion()}`;
      const { cubin } = this.cache.get(
        { source, arch: this.arch, compilerVersion: this.compilerVersion, options: nvrtcOptions(this.arch) },
        () => compileWithNvrtc(source, this.arch),
      );
      m = KernelModule.load(name, this.index, cubin);
      this.modules.set(name, m);
    }
    return m;
  }

  /** Blocks for all queued work and raises any error a kernel recorded in the device flag. */
  synchronize(): void {
    this.makeCurrent();
    this.status.queueRead();
    this.compute.synchronize();
    this.status.raiseIfSet();
  }
}

const contexts = new Map<number, DeviceContext>();

export function deviceContext(index: number): DeviceContext {
  let c = contexts.get(index);
  if (c === undefined) {
    c = new DeviceContext(index);
    contexts.set(index, c);
  }
  return c;
}

/** Contexts created so far (the accelerator's teardown and memory reports walk them). */
export function liveContexts(): DeviceContext[] {
  return [...contexts.values()];
}
