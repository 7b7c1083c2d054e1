package dev.pglock.core.internal;

import dev.pglock.core.HeldLock;
import java.util.function.Consumer;

/** For tests in other packages: sets the package-private hooks of {@link LeaderCandidate}. */
public final class LeaderCandidateHooks {

    private LeaderCandidateHooks() {
    }

    /** Runs {@code hook} on a candidate's thread with each lock it got, before it leads with it; null: none. */
    public static void beforeLeading(Consumer<HeldLock> hook) {
        LeaderCandidate.beforeLeadingForTests = hook;
    }
}
