package dev.pglock.core;

import java.time.Duration;
import java.util.List;
import java.util.Optional;

/**
 * Takes, reads and releases locks kept in PostgreSQL. Build one with {@link PgLock#advisory} or
 * {@link PgLock#lease}; both modes behave the same through this interface. Thread-safe: one client
 * serves a whole application. Closing it releases every lock it holds.
 */
public interface LockClient extends AutoCloseable {

    /**
     * Takes the lock if it can within {@link LockRequest#waitAtMost()} (zero: one attempt).
     *
     * @return the held lock, or empty when someone else held it for the whole wait
     * @throws LockDatabaseException when the database cannot answer (not when the lock is taken)
     * @throws IllegalStateException when the client is closed, or the calling thread holds the key
     *     shared and asks for it exclusively (an upgrade, which would wait for itself)
     */
    Optional<HeldLock> tryAcquire(LockRequest request);

    /**
     * Takes the lock, waiting up to {@link LockRequest#waitAtMost()}.
     *
     * @throws LockNotAcquiredException when someone else held it for the whole wait
     * @throws LockDatabaseException when the database cannot answer
     * @throws IllegalStateException as for {@link #tryAcquire}
     */
    HeldLock acquire(LockRequest request);

    /**
     * Takes the lock for the transaction open on {@code transaction}, a connection to this client's
     * database with auto-commit off, within {@link LockRequest#waitAtMost()}; see {@link TransactionLock}
     * for how each mode ties it to the transaction. After the transaction ends (commit or rollback),
     * {@link HeldLock#release()} the handle. A transaction lock is never re-entered by other locks of
     * this client, nor they by it: a thread that holds the key already waits for itself.
     *
     * @return the lock, or empty when someone else held it for the whole wait (the transaction is
     *     still usable)
     * @throws IllegalStateException when the connection is in auto-commit mode, or the client is closed
     * @throws LockDatabaseException when the database cannot answer
     */
    Optional<TransactionLock> tryAcquireInTransaction(java.sql.Connection transaction, LockRequest request);

    /**
     * When this client released {@code key} while its hold-at-least still keeps it taken: until when
     * (by this JVM's clock). Empty when it is not so. Never asks the database: it tells a caller whose
     * acquisition failed whether the holder is this client's own earlier acquisition.
     */
    default Optional<java.time.Instant> holdAtLeastUntil(String key) {
        return Optional.empty();
    }

    /** Reads a lock without taking it: who holds it and since when, or empty when nobody does. */
    Optional<LockInfo> get(String key);

    /**
     * For operators, and dangerous: frees {@code key} in the database whoever holds it, ending any
     * hold-at-least, and wakes the callers waiting for it. Its holder is not asked: it goes on working
     * until its next heartbeat tells it the lock was lost (taken over), so for up to one heartbeat
     * interval two holders may run at once. Use it for a lock whose holder is gone but whose lease is
     * long, never to hurry a live one. Lease mode only.
     *
     * @return the lock as it was just before it was freed, or empty when nobody held it (or another
     *     acquisition took the key between the read and the release: it is not freed unseen)
     * @throws UnsupportedOperationException in advisory mode: an advisory lock belongs to its holder's
     *     database session, and only ending that session ({@code pg_terminate_backend}) frees it
     */
    default Optional<LockInfo> forceRelease(String key) {
        throw new UnsupportedOperationException("an advisory lock cannot be force-released: it belongs to its"
                + " holder's database session; ending that session (pg_terminate_backend(pid), the pid is in"
                + " LockInfo) frees it");
    }

    /**
     * Stands as a leader candidate for {@code key}: a thread of its own waits for the key's lock,
     * calls {@code onElected} with it, and when the lock is lost or given up calls {@code onRevoked}
     * and stands again, until the returned {@link Leadership} is closed. Whoever holds the key leads;
     * {@link #get(String)} shows who (and, in lease mode, the data the leader advertised with
     * {@code updateData}). A leader that dies is replaced when its lock ends: advisory, within one
     * heartbeat; lease, within the lease plus one heartbeat.
     */
    default Leadership lead(String key, LeaderCallbacks callbacks) {
        return new dev.pglock.core.internal.LeaderCandidate(this, key, callbacks, Duration.ofSeconds(1));
    }

    /**
     * Takes one of {@code permits} permits of the semaphore {@code request.key()}, if one is free within
     * {@link LockRequest#waitAtMost()}: at most {@code permits} holders of the key exist at once, across
     * every client. A permit is held, renewed, lost and released like an exclusive lock (its lease,
     * hold-at-least and, in lease mode, data come from the request) and has a fencing token of its
     * own. Permits are always {@link LockRequest#detached() detached}: a thread may hold several.
     * A semaphore and a lock with the same key are independent of each other.
     *
     * <p>A caller waits for one permit at a time, in the database like a lock, and tries all of them
     * again every 200 ms, so a permit freed while it waited for another is taken within 200 ms.
     *
     * @param permits how many holders the semaphore allows, 1 to 1000; every user of the key must ask
     *     for the same number
     * @return the permit, whose {@link HeldLock#key()} is the semaphore's key; empty when every permit
     *     was held elsewhere for the whole wait
     * @throws IllegalArgumentException when {@code permits} is out of range or the request is shared
     * @throws IllegalStateException when another holder of the key uses another number of permits
     *     (nothing is then taken), or the client is closed
     * @throws LockDatabaseException when the database cannot answer
     */
    default Optional<HeldLock> tryAcquirePermit(LockRequest request, int permits) {
        return Permits.tryAcquire(this, request, permits);
    }

    /**
     * {@link #tryAcquirePermit}, throwing when no permit was free for the whole wait.
     *
     * @throws LockNotAcquiredException when every permit was held elsewhere for the whole wait
     */
    default HeldLock acquirePermit(LockRequest request, int permits) {
        return Permits.acquire(this, request, permits);
    }

    /**
     * Who holds permits of the semaphore {@code key}: one snapshot per permit held, with
     * {@link LockInfo#permit()} and {@link LockInfo#permits()} set. Empty when nobody holds one.
     */
    default List<LockInfo> getPermits(String key) {
        return Permits.holders(this, key);
    }

    /** Every lock this client can see in the database, its own and others'. */
    List<LockInfo> list();

    /** Which of the two modes this client uses. */
    LockMode mode();

    /**
     * What this client can tell about itself now, without asking the database: locks held,
     * connections in use, when its heartbeat or session check last succeeded, and what it knows to be
     * wrong. Cheap enough for a metrics gauge.
     */
    LockClientStatus status();

    /**
     * {@link #status()}, and when nothing is known to be wrong, one trivial statement on a lock
     * session that is idle, to see that the database answers. Never takes a lock, never waits for a
     * connection or behind a caller's statement (a busy session counts as answering). For health checks.
     */
    LockClientStatus probe();

    /** The identity this client writes as the owner of its locks. */
    String owner();

    /**
     * Whether {@link #close(Duration)} has begun: from then on the client grants nothing, and every
     * acquire throws {@link IllegalStateException}. Lets a caller tell "shutting down" from a mistake.
     */
    boolean isClosed();

    /**
     * Closes at once: {@link #close(Duration) close(Duration.ZERO)}. Every lock still held is reported
     * lost to its holder ({@code onLost}, {@code assertHeld} throws), then released, and the
     * connections are freed. Idempotent.
     */
    @Override
    void close();

    /**
     * Closes gracefully: stops granting at once (new and waiting acquires end with an
     * {@link IllegalStateException} saying the client is closed), waits up to {@code timeout} for the
     * locks still held to be released by their holders, then reports the rest lost to their holders
     * before releasing them, and frees the connections. Use it at shutdown so that no lock is freed
     * under work that is still running (the Spring Boot starter does, within
     * {@code spring.lifecycle.timeout-per-shutdown-phase}). Idempotent: a later call returns once the first has finished (at once when a listener the
     * closing runs makes it), so that it too can rely on nothing being held any more.
     * An interrupt of the calling thread ends the wait for the holders early, but the rest still
     * happens in full (every lock is given back before this returns); the thread's interrupt flag is
     * set again when it returns. Beyond {@code timeout}, it also waits, for up to twice the client's
     * network timeout, for database calls in flight (a grant racing the close is given back), and for
     * {@code onLost} listeners already queued on the event thread, until {@code timeout} or 10 s
     * (or the network timeout, if longer) after the call, whichever is later (the releases they hold
     * back are made after them; when a listener itself closes the client, the listeners queued
     * behind it run first, on a thread of their own).
     */
    void close(Duration timeout);
}
