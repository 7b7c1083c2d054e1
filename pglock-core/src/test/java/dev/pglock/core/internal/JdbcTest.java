package dev.pglock.core.internal;

import static org.assertj.core.api.Assertions.assertThatCode;

import java.sql.Connection;
import org.junit.jupiter.api.Test;

class JdbcTest {

    /**
     * A pool's close that throws an unchecked exception (HikariCP's did, with a NullPointerException,
     * on a connection aborted a moment before: seen in a CI run of the fault-injection test) must not
     * stop whatever is giving connections back, such as a client's close().
     */
    @Test
    void closingAndAbortingQuietlySwallowWhatAPoolThrows() {
        Connection throwing = (Connection) java.lang.reflect.Proxy.newProxyInstance(getClass().getClassLoader(),
                new Class<?>[] {Connection.class}, (p, m, args) -> {
                    throw new NullPointerException("connection is null (a pool closing an aborted connection)");
                });
        assertThatCode(() -> Jdbc.closeQuietly(throwing)).doesNotThrowAnyException();
        assertThatCode(() -> Jdbc.abortQuietly(throwing)).doesNotThrowAnyException();
    }
}
