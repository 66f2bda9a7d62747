/**
 * Declarations of the NCCL (libnccl.so.2) functions Fulgur's process group uses. ncclUniqueId is a
 * 128-byte struct passed by value to ncclCommInitRank; koffi marshals it from { internal: bytes }.
 * Enum values are from nccl.h (stable since NCCL 2.10; ncclAvg needs 2.10+, bfloat16 2.10+).
 */
import koffi from "koffi";
import { lazyBindings } from "./libraries";
import type { Out, Ptr, PtrArg } from "./cudart";

export const NCCL_UNIQUE_ID_BYTES = 128;

let uniqueIdDeclared = false;

/** Declares the ncclUniqueId struct type once; the prototypes below refer to it by name. */
export function declareNcclTypes(): void {
  if (uniqueIdDeclared) return;
  koffi.struct("ncclUniqueId", { internal: koffi.array("uint8_t", NCCL_UNIQUE_ID_BYTES, "Typed") });
  uniqueIdDeclared = true;
}

export const NCCL_PROTOTYPES = {
  ncclGetVersion: "int ncclGetVersion(_Out_ int *version)",
  ncclGetUniqueId: "int ncclGetUniqueId(_Out_ ncclUniqueId *uniqueId)",
  ncclCommInitRank: "int ncclCommInitRank(_Out_ void **comm, int nranks, ncclUniqueId commId, int rank)",
  ncclAllReduce:
    "int ncclAllReduce(void *sendbuff, void *recvbuff, size_t count, int datatype, int op, void *comm, void *stream)",
  ncclBroadcast:
    "int ncclBroadcast(void *sendbuff, void *recvbuff, size_t count, int datatype, int root, void *comm, void *stream)",
  ncclAllGather: "int ncclAllGather(void *sendbuff, void *recvbuff, size_t sendcount, int datatype, void *comm, void *stream)",
  ncclReduceScatter:
    "int ncclReduceScatter(void *sendbuff, void *recvbuff, size_t recvcount, int datatype, int op, void *comm, void *stream)",
  ncclSend: "int ncclSend(void *sendbuff, size_t count, int datatype, int peer, void *comm, void *stream)",
  ncclRecv: "int ncclRecv(void *recvbuff, size_t count, int datatype, int peer, void *comm, void *stream)",
  ncclGroupStart: "int ncclGroupStart()",
  ncclGroupEnd: "int ncclGroupEnd()",
  ncclCommAbort: "int ncclCommAbort(void *comm)",
  ncclCommDestroy: "int ncclCommDestroy(void *comm)",
  ncclCommGetAsyncError: "int ncclCommGetAsyncError(void *comm, _Out_ int *asyncError)",
  ncclGetErrorString: "const char *ncclGetErrorString(int result)",
  ncclGetLastError: "const char *ncclGetLastError(void *comm)",
} as const;

export interface NcclUniqueId {
  internal: Uint8Array;
}

export interface Nccl {
  ncclGetVersion(version: Out<number>): number;
  ncclGetUniqueId(id: Partial<NcclUniqueId>): number;
  ncclCommInitRank(comm: Out<Ptr | null>, nranks: number, id: NcclUniqueId, rank: number): number;
  ncclAllReduce(send: PtrArg, recv: PtrArg, count: number, dt: number, op: number, comm: Ptr, stream: Ptr): number;
  ncclBroadcast(send: PtrArg, recv: PtrArg, count: number, dt: number, root: number, comm: Ptr, stream: Ptr): number;
  ncclAllGather(send: PtrArg, recv: PtrArg, count: number, dt: number, comm: Ptr, stream: Ptr): number;
  ncclReduceScatter(send: PtrArg, recv: PtrArg, count: number, dt: number, op: number, comm: Ptr, stream: Ptr): number;
  ncclSend(send: PtrArg, count: number, dt: number, peer: number, comm: Ptr, stream: Ptr): number;
  ncclRecv(recv: PtrArg, count: number, dt: number, peer: number, comm: Ptr, stream: Ptr): number;
  ncclGroupStart(): number;
  ncclGroupEnd(): number;
  ncclCommAbort(comm: Ptr): number;
  ncclCommDestroy(comm: Ptr): number;
  ncclCommGetAsyncError(comm: Ptr, asyncError: Out<number>): number;
  ncclGetErrorString(result: number): string | null;
  ncclGetLastError(comm: Ptr | null): string | null;
}

export const nccl = lazyBindings<Nccl>("nccl", NCCL_PROTOTYPES, declareNcclTypes);

// ncclResult_t
export const ncclSuccess = 0;
export const ncclInProgress = 7;
// ncclDataType_t
export const ncclInt32 = 2;
export const ncclFloat16 = 6;
export const ncclFloat32 = 7;
export const ncclFloat64 = 8;
export const ncclBfloat16 = 9;
// ncclRedOp_t
export const ncclSum = 0;
export const ncclProd = 1;
export const ncclMax = 2;
export const ncclMin = 3;
export const ncclAvg = 4;
