package dev.pglock.spring.keys.a;

import dev.pglock.spring.DistributedLock;

/** A keyed interface method, implemented by a lambda bean: its parameter names come from the interface. */
public interface KeyedMapper {

    @DistributedLock(key = "#tenant")
    String sync(String tenant);
}
