package dev.pglock.spring.keys.a;

import dev.pglock.spring.DistributedLock;

/**
 * An interface that a library implements with a JDK dynamic proxy (as MyBatis mappers or HTTP
 * client interfaces are): the bean's class is then {@code $ProxyNN}, numbered in creation order.
 */
public interface Mapper {

    @DistributedLock
    String sync(String tenant);
}
