/**
 * Offloaded gradients on their way to the host (offload to a GPU's host). Each unit's reduced
 * gradient starts down one unit late, when the next unit is reduced: its reduce-scatter has then
 * had a unit's backward to finish, so the copy stream does not make compute wait for it. A reduced
 * slice stays on the device until it is down, so when backward outruns the copies (a large model at
 * a small batch) the host waits for the oldest once more than DOWNLOADS_IN_FLIGHT units are under
 * way, instead of the device filling with every unit's gradient.
 */
import { DOWNLOADS_IN_FLIGHT } from "./api";

/** What the queue asks of a unit (FlatUnit's download methods). */
export interface Downloading {
  /** Starts this step's first reduced gradient down (no wait); a no-op when there is none. */
  startDownloads(): void;
  /** Frees the device copies whose download is done (no wait). */
  sweepDownloads(): void;
  /** Whether a download of this unit is still under way. */
  readonly downloading: boolean;
  /** Waits for this unit's downloads and frees their device copies. */
  waitDownloads(): void;
}

export class DownloadQueue<U extends Downloading> {
  private lastReduced: U | null = null;
  private inFlight: U[] = [];

  constructor(
    private readonly units: () => readonly U[],
    private readonly limit = DOWNLOADS_IN_FLIGHT,
  ) {}

  /** After `unit`'s gradients were reduced: the unit reduced before it starts down. */
  reduced(unit: U): void {
    const previous = this.lastReduced;
    this.lastReduced = unit;
    previous?.startDownloads();
    if (previous?.downloading) this.inFlight.push(previous);
    // Only the units this queue started have copies under way (those started by `flush` are
    // waited for at the step): sweeping them is sweeping every unit.
    for (const u of this.inFlight) u.sweepDownloads();
    this.inFlight = this.inFlight.filter((u) => u.downloading);
    while (this.inFlight.length > this.limit) this.inFlight.shift()!.waitDownloads();
  }

  /** Before the step: every unit's first gradient starts down (the last reduced one included). */
  flush(): void {
    this.lastReduced = null;
    this.inFlight = [];
    for (const unit of this.units()) unit.startDownloads();
  }
}
