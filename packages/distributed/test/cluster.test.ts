import { describe, expect, it } from "vitest";
import { detectClusterEnvironment } from "../src/cluster/detect";
import { LocalEnvironment } from "../src/cluster/local";
import { expandNodeList, expandTasksPerNode } from "../src/cluster/nodeList";
import { portFromJobId, SlurmEnvironment } from "../src/cluster/slurm";
import { TorchElasticEnvironment } from "../src/cluster/torchElastic";
import { DistributedArgumentError } from "../src/errors";

const TORCHRUN = {
  WORLD_SIZE: "8",
  RANK: "5",
  LOCAL_RANK: "1",
  LOCAL_WORLD_SIZE: "4",
  NODE_RANK: "1",
  GROUP_RANK: "1",
  MASTER_ADDR: "10.0.0.1",
  MASTER_PORT: "29500",
};

const SLURM = {
  SLURM_NTASKS: "6",
  SLURM_PROCID: "4",
  SLURM_LOCALID: "0",
  SLURM_NODEID: "2",
  SLURM_NNODES: "3",
  SLURM_TASKS_PER_NODE: "2(x3)",
  SLURM_NODELIST: "gpu[007-009]",
  SLURM_JOB_ID: "1234567",
  SLURM_JOB_NAME: "train",
};

describe("expandNodeList", () => {
  it("expands ranges, keeps zero padding, multiplies bracket groups", () => {
    expect(expandNodeList("node[001-003,007],gpu5")).toEqual(["node001", "node002", "node003", "node007", "gpu5"]);
    expect(expandNodeList("n[8-10]")).toEqual(["n8", "n9", "n10"]);
    expect(expandNodeList("n[08-10]")).toEqual(["n08", "n09", "n10"]);
    expect(expandNodeList("rack[1-2]-n[01-02]")).toEqual(["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]);
    expect(expandNodeList("a,b[3],c-d.e")).toEqual(["a", "b3", "c-d.e"]);
    expect(expandNodeList("single")).toEqual(["single"]);
  });

  it("names the variable and the problem for malformed lists", () => {
    expect(() => expandNodeList("node[1-3")).toThrow(/SLURM_NODELIST="node\[1-3" is not a valid host list: "\[" is never closed/);
    expect(() => expandNodeList("node[3-1]")).toThrow(/range 3-1 runs backwards/);
    expect(() => expandNodeList("node[a-b]")).toThrow(/"a-b" is not a number or a range/);
    expect(() => expandNodeList("a,,b")).toThrow(/empty host name/);
    expect(() => expandNodeList("n[]")).toThrow(/empty brackets/);
    expect(() => expandNodeList("n]1[")).toThrow(/"\]" without "\["/);
    expect(() => expandNodeList("x[[1]]", "SLURM_JOB_NODELIST")).toThrow(/SLURM_JOB_NODELIST=.*nested brackets/);
  });

  it("expands task counts per node", () => {
    expect(expandTasksPerNode("2(x3),1")).toEqual([2, 2, 2, 1]);
    expect(expandTasksPerNode("4")).toEqual([4]);
    expect(() => expandTasksPerNode("2(x0)")).toThrow(/SLURM_TASKS_PER_NODE="2\(x0\)" is not valid/);
    expect(() => expandTasksPerNode("two")).toThrow(DistributedArgumentError);
  });
});

describe("TorchElasticEnvironment", () => {
  it("reads the torchrun variables", () => {
    const e = new TorchElasticEnvironment(TORCHRUN);
    expect(e.detect()).toBe(true);
    expect(e.createsProcessesExternally).toBe(true);
    expect([e.worldSize(), e.globalRank(), e.localRank(), e.localWorldSize(), e.nodeRank(), e.mainAddress(), e.mainPort()]).toEqual([
      8, 5, 1, 4, 1, "10.0.0.1", 29500,
    ]);
  });

  it("defaults local variables for one-process-per-node launchers", () => {
    const e = new TorchElasticEnvironment({ WORLD_SIZE: "3", RANK: "2", MASTER_ADDR: "h", MASTER_PORT: "1234" });
    expect(e.layout()).toEqual({ worldSize: 3, rank: 2, localRank: 0, localWorldSize: 1, nodeRank: 2, mainAddress: "h", mainPort: 1234 });
  });

  it("refuses invalid values naming the variable and value", () => {
    const bad = (over: Record<string, string | undefined>) => () => new TorchElasticEnvironment({ ...TORCHRUN, ...over }).layout();
    expect(bad({ RANK: "8" })).toThrow("RANK=8 must be less than WORLD_SIZE=8");
    expect(bad({ RANK: "-1" })).toThrow(/RANK=-1 is out of range; expected an integer from 0 up/);
    expect(bad({ WORLD_SIZE: "eight" })).toThrow(/WORLD_SIZE="eight" is not an integer/);
    expect(bad({ WORLD_SIZE: "0" })).toThrow(/WORLD_SIZE=0 is out of range/);
    expect(bad({ LOCAL_RANK: "4" })).toThrow("LOCAL_RANK=4 must be less than LOCAL_WORLD_SIZE=4");
    expect(bad({ LOCAL_WORLD_SIZE: "9" })).toThrow("LOCAL_WORLD_SIZE=9 must not exceed WORLD_SIZE=8");
    expect(bad({ MASTER_PORT: "70000" })).toThrow(/MASTER_PORT=70000 is out of range; expected an integer from 1 to 65535/);
    expect(bad({ MASTER_PORT: "29500.5" })).toThrow(/MASTER_PORT="29500.5" is not an integer/);
    expect(bad({ MASTER_ADDR: undefined })).toThrow(/MASTER_ADDR is not set/);
    expect(bad({ MASTER_PORT: "" })).toThrow(/MASTER_PORT is not set/);
  });
});

describe("SlurmEnvironment", () => {
  it("reads srun's variables; the main address is the first host and the port comes from the job id", () => {
    const e = new SlurmEnvironment(SLURM);
    expect(e.detect()).toBe(true);
    expect(e.layout()).toEqual({ worldSize: 6, rank: 4, localRank: 0, localWorldSize: 2, nodeRank: 2, mainAddress: "gpu007", mainPort: 19567 });
    expect(portFromJobId("1234567")).toBe(19567);
  });

  it("MASTER_ADDR, MASTER_PORT and SLURM_NTASKS_PER_NODE take precedence", () => {
    const e = new SlurmEnvironment({ ...SLURM, MASTER_ADDR: "head", MASTER_PORT: "2000", SLURM_NTASKS_PER_NODE: "3", SLURM_LOCALID: "2" });
    expect([e.mainAddress(), e.mainPort(), e.localWorldSize(), e.localRank()]).toEqual(["head", 2000, 3, 2]);
  });

  it("does not claim an interactive allocation's shell", () => {
    expect(new SlurmEnvironment({ ...SLURM, SLURM_JOB_NAME: "bash" }).detect()).toBe(false);
    expect(new SlurmEnvironment({ SLURM_JOB_ID: "1" }).detect()).toBe(false);
  });

  it("refuses invalid values naming the variable and value", () => {
    const bad = (over: Record<string, string | undefined>) => () => new SlurmEnvironment({ ...SLURM, ...over }).layout();
    expect(bad({ SLURM_PROCID: "6" })).toThrow("SLURM_PROCID=6 must be less than SLURM_NTASKS=6");
    expect(bad({ SLURM_NODEID: "3" })).toThrow("SLURM_NODEID=3 must be less than SLURM_NNODES=3");
    expect(bad({ SLURM_LOCALID: "2" })).toThrow("SLURM_LOCALID=2 must be less than the tasks on this node=2");
    expect(bad({ SLURM_TASKS_PER_NODE: "2", SLURM_NNODES: undefined })).toThrow(/SLURM_NODEID=2 but SLURM_TASKS_PER_NODE="2" describes only 1 node/);
    expect(bad({ SLURM_NODELIST: "gpu[1-" })).toThrow(/SLURM_NODELIST="gpu\[1-" is not a valid host list/);
    expect(bad({ SLURM_JOB_ID: undefined })).toThrow(/neither MASTER_PORT nor SLURM_JOB_ID is set/);
    expect(bad({ SLURM_NTASKS: "x" })).toThrow(/SLURM_NTASKS="x" is not an integer/);
  });
});

describe("LocalEnvironment and detection", () => {
  it("is a world of one on 127.0.0.1 with a free port, stable across calls", () => {
    const e = new LocalEnvironment({});
    expect([e.worldSize(), e.globalRank(), e.localRank(), e.nodeRank(), e.mainAddress()]).toEqual([1, 0, 0, 0, "127.0.0.1"]);
    expect(e.createsProcessesExternally).toBe(false);
    const port = e.mainPort();
    expect(port).toBeGreaterThan(0);
    expect(e.mainPort()).toBe(port);
    expect(new LocalEnvironment({ MASTER_PORT: "4321" }).mainPort()).toBe(4321);
  });

  it("picks torchrun variables first, then SLURM, then local; an explicit choice wins", () => {
    expect(detectClusterEnvironment({ ...SLURM, ...TORCHRUN }).name).toBe("torchelastic");
    expect(detectClusterEnvironment(SLURM).name).toBe("slurm");
    expect(detectClusterEnvironment({}).name).toBe("local");
    expect(detectClusterEnvironment(TORCHRUN, "slurm").name).toBe("slurm");
    const mine = new LocalEnvironment({ MASTER_PORT: "1" });
    expect(detectClusterEnvironment(TORCHRUN, mine)).toBe(mine);
    expect(() => detectClusterEnvironment({}, "kubernetes" as never)).toThrow(/got "kubernetes"; expected one of torchelastic, slurm, local/);
  });
});
