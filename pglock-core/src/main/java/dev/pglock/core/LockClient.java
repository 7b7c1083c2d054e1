package dev.pglock.core;

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

    /** Reads a lock without taking it: who holds it and since when, or empty when nobody does. */
    Optional<LockInfo> get(String key);

    /** Every lock this client can see in the database, its own and others'. */
    List<LockInfo> list();

    /** Which of the two modes this client uses. */
    LockMode mode();

    /** The identity this client writes as the owner of its locks. */
    String owner();

    /** Releases every lock this client holds (their {@code onLost} listeners are told) and frees its connections. */
    @Override
    void close();
}
