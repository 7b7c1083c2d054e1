package dev.pglock.core;

import java.time.Instant;
import java.util.function.Consumer;

/**
 * A lock this process holds, returned by {@link LockClient#tryAcquire} and {@link LockClient#acquire}.
 * Closing it releases it, so it fits try-with-resources:
 *
 * <pre>{@code
 * try (HeldLock lock = client.acquire(LockRequest.of("report").waitAtMost(Duration.ofSeconds(10)))) {
 *     lock.assertHeld();
 *     repository.save(report, lock.fencingToken());
 * }
 * }</pre>
 *
 * <p>The handle is the ownership: whoever has the {@code HeldLock} may release it, on any thread, so
 * asynchronous work can release its lock on the thread that completes it. Re-entry stays per thread:
 * the thread that acquired a key may acquire it again at once while it holds it (each acquisition
 * returns its own {@code HeldLock}, and the key is free again once every one of them is released),
 * unless the request was {@link LockRequest#detached() detached}, for work that leaves the thread.
 */
public interface HeldLock extends AutoCloseable {

    /** The key as it was requested. */
    String key();

    /**
     * A number that grows with every acquisition of this key, by any client: a resource that remembers
     * the highest token it has seen can refuse a write from a holder whose lock has since been lost and
     * taken by someone else. Re-entrant acquisitions share the token of the outer one.
     *
     * @throws IllegalStateException when the client was built without fencing tokens (advisory mode
     *     without {@code fencingTokens(true)}); the message says how to turn them on
     */
    long fencingToken();

    /** Who holds the lock: the client's owner identity, unique per client instance. */
    String owner();

    /** When this process acquired the lock. */
    Instant acquiredAt();

    /** Whether the lock is still held: false after release, after it was lost, and after the client closed. */
    boolean isHeld();

    /** Whether this is a shared (read) lock. */
    boolean isShared();

    /**
     * Calls {@code listener} once if the lock is lost while held (not on a normal release). Called at
     * once, on the calling thread, when the lock is already lost; otherwise on the client's event
     * thread (listeners of one client run one after another, so a slow one delays the others, never
     * a heartbeat), on the thread that closes the client, or on the thread whose {@link #release()}
     * finds the loss. A lease the client stopped trusting is given back in the database only after
     * the listeners queued before its release have returned, so a slow listener holds back that
     * release (never past the lease's end); do not wait in a listener for the same key.
     */
    HeldLock onLost(Consumer<LockLostException> listener);

    /**
     * Throws when the lock is no longer held. Call it before a step that must not run unprotected.
     *
     * @throws LockLostException when the lock was lost, with the reason
     * @throws IllegalStateException when the lock was released by its holder
     */
    void assertHeld();

    /**
     * Replaces the bytes stored with the lock, readable by anyone through {@link LockClient#get}
     * (a job's progress, the address of the leader). Lease mode only.
     *
     * @throws LockLostException when the lock is no longer held
     * @throws UnsupportedOperationException in advisory mode, where a lock carries no data
     */
    void updateData(byte[] data);

    /**
     * Releases this acquisition. Each acquisition is released once: a second call is a mistake
     * (it would otherwise release a re-entrant outer hold) and throws.
     *
     * @return true when this call released it, and the lock was this holder's until then; false when
     *     the lock had already been lost or the client closed, so there was nothing left to release,
     *     and also when this release is what finds it lost (the database had dropped it, or it was no
     *     longer trusted, before any heartbeat noticed): the {@link #onLost} listeners then run on
     *     this thread before it returns, as the work done under the lock may not have been exclusive.
     *     A release kept back by hold-at-least answers at once, before its database release runs; a
     *     loss that one finds later is logged, not reported here
     * @throws IllegalStateException when this HeldLock was already released; nothing changes
     */
    boolean release();

    /**
     * Releases the lock if it is still held; does nothing when it was already released or lost, so
     * try-with-resources may follow an explicit {@link #release()}.
     */
    @Override
    void close();
}
