package dev.pglock.core;

import dev.pglock.test.PgTestDatabase;
import java.time.Duration;

/**
 * A replica as a process of its own, for the leader failover test: stands as a leader candidate and
 * prints "STANDING name" once, then "ELECTED name" when it leads; runs until killed.
 * Arguments: mode (advisory | lease), namespace, table, name, heartbeat millis, lease millis.
 */
public final class LeaderProcess {

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        String namespace = args[1];
        String table = args[2];
        String name = args[3];
        Duration heartbeat = Duration.ofMillis(Long.parseLong(args[4]));
        Duration lease = Duration.ofMillis(Long.parseLong(args[5]));
        var pool = PgTestDatabase.get().pooledDataSource(6);
        LockClient client = "lease".equals(mode)
                ? PgLock.lease(pool).namespace(namespace).tableName(table).lease(lease).heartbeatInterval(heartbeat)
                        .owner(name).build()
                : PgLock.advisory(pool).namespace(namespace).heartbeatInterval(heartbeat).owner(name).build();
        client.lead("leader", lock -> {
            System.out.println("ELECTED " + name);
            System.out.flush();
        });
        System.out.println("STANDING " + name);
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
