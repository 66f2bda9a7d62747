/**
 * A device mesh: the world's ranks laid out row-major in an n-dimensional grid, with one process
 * group per line along each dimension (HYBRID_SHARD: [replicas, shards]; pipeline × data
 * parallel: [stages, replicas]). Every rank creates every group in the same order, as process
 * groups require, and keeps the ones it belongs to.
 */
import type { ProcessGroup } from "@fulgur/core";
import { SoloGroup } from "./soloGroup";

export class DeviceMesh {
  private constructor(
    readonly shape: readonly number[],
    readonly names: readonly string[],
    /** This rank's coordinate along each dimension. */
    readonly coordinate: readonly number[],
    private readonly groups: readonly ProcessGroup[],
  ) {}

  static async create(world: ProcessGroup, shape: readonly number[], names: readonly string[]): Promise<DeviceMesh> {
    const size = shape.reduce((a, b) => a * b, 1);
    if (names.length !== shape.length) throw new RangeError(`device mesh: ${shape.length} dimensions but ${names.length} names`);
    if (!shape.every((d) => Number.isInteger(d) && d >= 1) || size !== world.size) {
      throw new RangeError(`device mesh: shape [${shape.join(", ")}] holds ${size} ranks; the world has ${world.size}`);
    }
    const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    const coordinate = strides.map((s, i) => Math.floor(world.rank / s) % shape[i]);
    const groups: ProcessGroup[] = [];
    for (let dim = 0; dim < shape.length; dim++) {
      let mine: ProcessGroup | null = null;
      // Each line along `dim`: fix every other coordinate; lines in rank order of their first member.
      for (let first = 0; first < size; first++) {
        if (Math.floor(first / strides[dim]) % shape[dim] !== 0) continue;
        const members = Array.from({ length: shape[dim] }, (_, k) => first + k * strides[dim]);
        const contains = members.includes(world.rank);
        if (members.length === 1) {
          if (contains) mine = new SoloGroup(world.ranks[world.rank]);
          continue;
        }
        const g = await world.newGroup(members);
        if (contains) mine = g;
      }
      groups.push(mine!);
    }
    return new DeviceMesh(shape, names, coordinate, groups);
  }

  /** The group of this rank's line along the named dimension. */
  group(name: string): ProcessGroup {
    const i = this.names.indexOf(name);
    if (i < 0) throw new RangeError(`device mesh: no dimension ${JSON.stringify(name)}; dimensions are ${this.names.join(", ")}`);
    return this.groups[i];
  }
}
