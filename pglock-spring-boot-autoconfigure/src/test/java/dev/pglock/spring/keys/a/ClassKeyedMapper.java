package dev.pglock.spring.keys.a;

import dev.pglock.spring.DistributedLock;

/** A key that names the target class, implemented by a lambda bean or a JDK proxy: the interface names it. */
public interface ClassKeyedMapper {

    @DistributedLock(key = "#root.targetClass.name + ':' + #tenant")
    String sync(String tenant);
}
