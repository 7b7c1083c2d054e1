package dev.pglock.spring.keys.a;

import dev.pglock.spring.DistributedLock;
import dev.pglock.spring.LockContext;

/** A bean whose simple name another package's bean shares; each answers the key it was locked with. */
public class Jobs {

    @DistributedLock
    public String run() {
        return LockContext.current().key();
    }

    @DistributedLock
    public String run(String tenant) {
        return LockContext.current().key();
    }

    @DistributedLock
    public String run(long tenant) {
        return LockContext.current().key();
    }

    /** Overloads whose parameter types share a simple name (Jobs), from two packages. */
    @DistributedLock
    public String run(Jobs other) {
        return LockContext.current().key();
    }

    @DistributedLock
    public String run(dev.pglock.spring.keys.b.Jobs other) {
        return LockContext.current().key();
    }
}
