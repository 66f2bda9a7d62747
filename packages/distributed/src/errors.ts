/**
 * The errors this package throws, one class per thing a user (or the Trainer) may want to branch
 * on. Every message names what was being done, by whom (rank, group, sequence number, key) and,
 * where one exists, what to change — a distributed job that fails with "timeout" and nothing else
 * costs an afternoon.
 */

/** A store request could not be answered in time; `keys` are the keys still missing. */
export class StoreTimeoutError extends Error {
  override readonly name = "StoreTimeoutError";
  constructor(
    readonly keys: readonly string[],
    readonly timeoutMs: number,
    message: string,
  ) {
    super(message);
  }
}

/** The store server refused this client's FULGUR_STORE_TOKEN. */
export class StoreTokenMismatchError extends Error {
  override readonly name = "StoreTokenMismatchError";
}

/** The connection to the store could not be made, or was lost while a request was pending. */
export class StoreConnectionError extends Error {
  override readonly name = "StoreConnectionError";
}

/** The server answered a request with an error (bad arguments, a non-integer counter...). */
export class StoreRequestError extends Error {
  override readonly name = "StoreRequestError";
}

/** The store server could not bind its address (port in use, address not on this machine). */
export class StoreBindError extends Error {
  override readonly name = "StoreBindError";
  constructor(
    readonly host: string,
    readonly port: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** Where a collective stood when it failed: enough for a log line that says which rank is where. */
export interface CollectiveContext {
  readonly op: string;
  readonly group: string;
  /** Rank within the group. */
  readonly rank: number;
  /** Rank in the job (the world group). */
  readonly globalRank: number;
  readonly seq: number;
}

function where(c: CollectiveContext): string {
  return `${c.op} #${c.seq} on group "${c.group}" (group rank ${c.rank}, global rank ${c.globalRank})`;
}

/** A collective (or send/recv) waited longer than the group's timeout. */
export class CollectiveTimeoutError extends Error {
  override readonly name = "CollectiveTimeoutError";
  constructor(
    readonly context: CollectiveContext,
    readonly timeoutMs: number,
    /** What the operation was waiting for, e.g. "data from group rank 2". */
    readonly waitingFor: string,
  ) {
    super(
      `${where(context)} timed out after ${timeoutMs} ms waiting for ${waitingFor}; ` +
        `a rank may have skipped this collective, crashed or be stuck (raise timeoutMs if the job is just slow)`,
    );
  }
}

/** Two ranks issued different collectives (or the same one with different arguments) at the same sequence number. */
export class CollectiveMismatchError extends Error {
  override readonly name = "CollectiveMismatchError";
  constructor(
    readonly context: CollectiveContext,
    readonly peer: number,
    readonly mine: string,
    readonly theirs: string,
  ) {
    super(
      `collective mismatch in ${where(context)}: this rank called ${mine} but group rank ${peer} called ${theirs}; ` +
        `every rank of a group must issue the same collectives in the same order with the same sizes and dtypes`,
    );
  }
}

/** A peer's connection closed (its process exited or destroyed the group) while this rank waited for it. */
export class PeerLostError extends Error {
  override readonly name = "PeerLostError";
  constructor(
    readonly peerGlobalRank: number,
    message: string,
  ) {
    super(message);
  }
}

/** Another rank failed a collective on this group and told everyone; the group is unusable since. */
export class GroupAbortedError extends Error {
  override readonly name = "GroupAbortedError";
  constructor(
    readonly group: string,
    readonly fromGlobalRank: number,
    readonly reason: string,
  ) {
    super(`group "${group}" was aborted by global rank ${fromGlobalRank}: ${reason}`);
  }
}

/** A collective was issued on a group that had already failed (or was destroyed); `cause` is why. */
export class GroupFailedError extends Error {
  override readonly name = "GroupFailedError";
}

/** An argument to a collective, a group or the launcher is invalid; the message names it and what is allowed. */
export class DistributedArgumentError extends TypeError {
  override readonly name = "DistributedArgumentError";
}

/** A rank reported a failure through the store (DESIGN.md decision 12). */
export class RankFailureError extends Error {
  override readonly name = "RankFailureError";
  constructor(
    readonly failingRank: number,
    readonly reason: string,
    readonly remoteStack: string | undefined,
  ) {
    super(`rank ${failingRank} failed: ${reason}`);
  }
}
