package ai.edgecpm;

/**
 * A copy of the model's fixed-size state and position (no KV copy), taken with {@link Edgecpm#snapshot()}.
 * Close it when done; closing twice is fine.
 */
public final class Snapshot implements AutoCloseable {
  final Edgecpm owner;
  private long handle;

  Snapshot(Edgecpm owner, long handle) {
    this.owner = owner;
    this.handle = handle;
  }

  synchronized long handle() {
    if (handle == 0) throw new IllegalStateException("the snapshot is closed");
    return handle;
  }

  @Override
  public synchronized void close() {
    if (handle != 0) {
      Edgecpm.nSnapshotFree(handle);
      handle = 0;
    }
  }
}
