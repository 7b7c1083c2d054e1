package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.TransactionLock;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import org.springframework.transaction.support.TransactionSynchronization;
import org.springframework.transaction.support.TransactionSynchronizationManager;

/**
 * Ties the locks of one Spring transaction to it: before the commit it checks each is still held (a
 * transaction lock confirms itself inside the transaction), so a lost lock rolls the transaction back
 * with {@link dev.pglock.core.LockLostException}; after completion it releases those it was asked
 * to, so the next holder sees the commit. One per transaction, checking in key order: confirmations
 * take row locks in lease mode, in the order in which heartbeats lock shared rows (their own client's
 * heartbeat never waits for their exclusive ones: see the lease client's confirmation).
 */
final class LockSynchronization implements TransactionSynchronization {

    /** A lock, and what to do once the transaction has completed (null: nothing, its holder releases it). */
    private record Tied(HeldLock lock, Runnable afterCompletion) {
    }

    private final List<Tied> locks = new ArrayList<>();
    /** Locks whose work threw: not checked before the commit (see {@link #notCheckedBeforeCommit}). */
    private final java.util.Set<HeldLock> notChecked = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());

    private LockSynchronization() {
    }

    /** Whether a transaction (or a transaction-synchronization scope) runs on this thread. */
    static boolean active() {
        return TransactionSynchronizationManager.isSynchronizationActive();
    }

    /** Checks the lock before the commit and releases it once the transaction has completed. */
    static void releaseAfterCompletion(HeldLock lock) {
        afterCompletion(lock, lock::close);
    }

    /** Checks the lock before the commit and runs {@code then} once the transaction has completed. */
    static void afterCompletion(HeldLock lock, Runnable then) {
        current().locks.add(new Tied(lock, then));
    }

    /**
     * The work under an advisory transaction lock of this transaction threw, or returned with the lock
     * still held: the lock is no longer checked before the commit, only released after it. Such a
     * lock is lost only with the work it covered (a rollback to a savepoint set before it, as a failed
     * {@code NESTED} scope makes) or with the whole transaction; a caller that caught the failure and
     * commits the rest does not need it, and must not fail on it.
     */
    static void notCheckedBeforeCommit(HeldLock lock) {
        if (active()) {
            current().notChecked.add(lock);
        }
    }

    /** Checks the lock before the commit; its holder releases it. */
    static void checkBeforeCommit(HeldLock lock) {
        current().locks.add(new Tied(lock, null));
    }

    private static final String SYNCHRONIZATION_UTILS = "org.springframework.transaction.support.TransactionSynchronizationUtils";
    private static final java.util.Set<String> COMPLETION_PHASES = java.util.Set.of("triggerBeforeCommit",
            "triggerBeforeCompletion", "triggerAfterCommit", "invokeAfterCommit", "triggerAfterCompletion",
            "invokeAfterCompletion");

    /**
     * Whether this thread runs inside the completion of the transaction it would join: in a
     * {@code beforeCommit} (a {@code @TransactionalEventListener} of phase BEFORE_COMMIT), or later.
     * Spring calls the synchronizations of that phase that were registered before it began, so one
     * registered now is not asked before the commit. Read from the stack, innermost first: a
     * completion frame reached with no transaction scope begun after it, or with only the innermost
     * declarative scope between, when that scope joined the running transaction (the one completing:
     * no other scope lies between). A TransactionTemplate, or a declarative scope that began a
     * transaction of its own, or a second scope, answers false: its own commit may come, and which
     * transaction a scope further out joined cannot be read. Costs a walk of the stack; called only
     * when a lease lock joins a transaction.
     */
    static boolean inCompletionOfCurrentTransaction() {
        return StackWalker.getInstance().walk(frames -> {
            boolean joinedScopeSeen = false;
            for (java.util.Iterator<StackWalker.StackFrame> it = frames.iterator(); it.hasNext();) {
                StackWalker.StackFrame frame = it.next();
                String type = frame.getClassName();
                String method = frame.getMethodName();
                if (type.equals("org.springframework.transaction.support.TransactionTemplate") && method.equals("execute")) {
                    return false;
                }
                if (type.equals("org.springframework.transaction.interceptor.TransactionAspectSupport")
                        && method.equals("invokeWithinTransaction")) {
                    if (joinedScopeSeen || innermostDeclarativeScopeIsNew()) {
                        return false;
                    }
                    joinedScopeSeen = true; // it joined: the transaction further out decides
                    continue;
                }
                if (type.equals(SYNCHRONIZATION_UTILS) && COMPLETION_PHASES.contains(method)) {
                    return true;
                }
            }
            return false;
        });
    }

    private static boolean innermostDeclarativeScopeIsNew() {
        try {
            return org.springframework.transaction.interceptor.TransactionAspectSupport.currentTransactionStatus()
                    .isNewTransaction();
        } catch (org.springframework.transaction.NoTransactionException none) {
            return true;
        }
    }

    private static LockSynchronization current() {
        for (TransactionSynchronization registered : TransactionSynchronizationManager.getSynchronizations()) {
            if (registered instanceof LockSynchronization mine) {
                return mine;
            }
        }
        LockSynchronization created = new LockSynchronization();
        TransactionSynchronizationManager.registerSynchronization(created);
        return created;
    }

    @Override
    public void beforeCommit(boolean readOnly) {
        List<Tied> inKeyOrder = new ArrayList<>(locks);
        inKeyOrder.sort(Comparator.comparing(tied -> tied.lock().key()));
        for (Tied tied : inKeyOrder) {
            if (notChecked.contains(tied.lock())) {
                continue;
            }
            if (tied.lock() instanceof TransactionLock transactionLock) {
                transactionLock.confirmBeforeCommit();
            } else {
                tied.lock().assertHeld();
            }
        }
    }

    @Override
    public void afterCompletion(int status) {
        for (int i = locks.size() - 1; i >= 0; i--) {
            Runnable then = locks.get(i).afterCompletion();
            if (then != null) {
                then.run();
            }
        }
    }

    @Override
    public String toString() {
        return "LockSynchronization" + locks.stream().map(tied -> tied.lock().key()).toList();
    }
}
