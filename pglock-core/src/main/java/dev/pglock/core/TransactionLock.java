package dev.pglock.core;

/**
 * A lock taken for one database transaction, by {@link LockClient#tryAcquireInTransaction}: it lives
 * and dies with that transaction, so work whose data lives in the lock's own database can never
 * commit after losing it.
 *
 * <ul>
 *   <li>Advisory mode: a {@code pg_advisory_xact_lock} on the transaction's own connection. Commit or
 *       rollback releases it; a session that dies takes the lock and the uncommitted work with it.
 *       {@link #release()} only ends this handle: PostgreSQL keeps the lock until the transaction
 *       ends. JDBC tells nobody of a commit, so {@link #isHeld()} cannot see it: after the commit it
 *       answers true until {@code release()} or the connection's close (the Spring layer releases the
 *       handle when the transaction completes). Do no work under it after the transaction ended.
 *   <li>Lease mode: a lease taken as {@link LockClient#tryAcquire} takes it (so other clients see it
 *       at once), which {@link #confirmBeforeCommit()} extends inside the transaction. From then on
 *       the transaction holds the lease's row lock, so nobody can take the lease over until the
 *       transaction has ended; a lease already gone makes the confirmation throw, and the transaction
 *       must roll back. {@link #release()} after the transaction has ended gives the lease back.
 *       Release it as soon as the transaction has ended, committed or rolled back: until then the
 *       client trusts the lease as the confirmation renewed it, and a rollback undid that renewal.
 * </ul>
 *
 * <p>The Spring layer does both steps for you ({@code @DistributedLock(inTransaction = true)}).
 */
public interface TransactionLock extends HeldLock {

    /**
     * Call just before the transaction commits, on its thread: confirms, inside the transaction, that
     * the lock is still this holder's and keeps it so until the transaction ends. Make it the last step
     * before the commit: in lease mode, other clients' attempts on the key wait from here until the
     * transaction ends.
     *
     * @throws LockLostException when the lock is no longer held: the transaction must roll back
     * @throws LockDatabaseException when the database cannot answer: the transaction cannot commit either
     */
    void confirmBeforeCommit();
}
