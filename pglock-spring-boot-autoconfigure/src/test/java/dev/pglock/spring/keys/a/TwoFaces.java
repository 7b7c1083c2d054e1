package dev.pglock.spring.keys.a;

import dev.pglock.spring.DistributedLock;

/** Two interfaces declaring one method, annotated on the second only: a JDK proxy of both is called with the first's. */
public final class TwoFaces {

    private TwoFaces() {
    }

    public interface Plainly {
        String run();
    }

    public interface Locked {
        @DistributedLock(key = "'two-faces'")
        String run();
    }
}
