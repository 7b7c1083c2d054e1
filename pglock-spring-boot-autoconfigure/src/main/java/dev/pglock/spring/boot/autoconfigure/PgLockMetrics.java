package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockObserver;
import dev.pglock.core.LockRequest;
import dev.pglock.spring.LockSkipListener;
import io.micrometer.common.KeyValue;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.Timer;
import io.micrometer.observation.Observation;
import io.micrometer.observation.ObservationRegistry;
import java.lang.reflect.Method;
import java.time.Duration;
import java.util.Locale;

/**
 * pglock's Micrometer instrumentation, registered by the starter when Micrometer is on the classpath
 * (define a bean of this type to replace it, or set {@code pglock.metrics.enabled=false}).
 *
 * <p>Through the Observation API, so that one instrumentation gives metrics and, with a tracer,
 * spans: {@code pglock.acquire} around each acquisition (low-cardinality tags {@code mode},
 * {@code outcome} = acquired / not-acquired / error, {@code wait} = yes / no; the key only as the
 * high-cardinality value {@code pglock.key}) and {@code pglock.held} around each held section
 * ({@code mode}, {@code outcome} = released / lost). Besides: the gauges {@code pglock.locks.held},
 * {@code pglock.sessions} and {@code pglock.connections.waiting} (by {@code mode}), the counters
 * {@code pglock.lost} (by {@code mode} and {@code reason}) and {@code pglock.skipped} (by
 * {@code method}, the annotated method as {@code Class.method}), and the timer
 * {@code pglock.heartbeat} (by {@code mode} and {@code outcome} = success / failure). No key ever
 * becomes a tag: keys are unbounded.
 */
public class PgLockMetrics implements LockObserver, LockSkipListener, LockClientBinder {

    private final MeterRegistry meters;
    private final ObservationRegistry observations;

    /**
     * @param meters where the gauges, counters and the heartbeat timer go
     * @param observations where the acquire and held observations go (their timers too, through the
     *     registry's meter handler); {@link ObservationRegistry#NOOP} for none
     */
    public PgLockMetrics(MeterRegistry meters, ObservationRegistry observations) {
        this.meters = meters;
        this.observations = observations;
    }

    private static String tag(LockMode mode) {
        return mode.name().toLowerCase(Locale.ROOT);
    }

    /** Registers the gauges of a client: held keys, lock sessions and waiting connections. */
    @Override
    public void bind(LockClient client) {
        String mode = tag(client.mode());
        Gauge.builder("pglock.locks.held", client, c -> c.status().heldLocks()).tag("mode", mode)
                .description("Keys this application holds now").strongReference(true).register(meters);
        Gauge.builder("pglock.sessions", client, c -> c.status().lockSessions()).tag("mode", mode)
                .description("Lock sessions (pinned connections) open now").strongReference(true).register(meters);
        Gauge.builder("pglock.connections.waiting", client, c -> c.status().waitingConnections()).tag("mode", mode)
                .description("Connections of callers waiting in the server (advisory), or the LISTEN connection (lease)")
                .strongReference(true).register(meters);
    }

    @Override
    public Acquisition acquiring(LockMode mode, LockRequest request) {
        Observation acquire = Observation.createNotStarted("pglock.acquire", observations)
                .contextualName("pglock acquire")
                .lowCardinalityKeyValue("mode", tag(mode))
                .lowCardinalityKeyValue("wait", request.waitAtMost().isZero() ? "no" : "yes")
                .highCardinalityKeyValue("pglock.key", request.key())
                .start();
        Observation.Scope scope = acquire.openScope();
        return new Acquisition() {
            @Override
            public Holding acquired(HeldLock lock) {
                end("acquired");
                Observation held = Observation.createNotStarted("pglock.held", observations)
                        .contextualName("pglock held")
                        .lowCardinalityKeyValue("mode", tag(mode))
                        .highCardinalityKeyValue("pglock.key", request.key())
                        .start();
                return lost -> held.lowCardinalityKeyValue(KeyValue.of("outcome", lost == null ? "released" : "lost"))
                        .stop();
            }

            @Override
            public void notAcquired() {
                end("not-acquired");
            }

            @Override
            public void failed(RuntimeException error) {
                acquire.error(error);
                end("error");
            }

            private void end(String outcome) {
                scope.close();
                acquire.lowCardinalityKeyValue("outcome", outcome).stop();
            }
        };
    }

    @Override
    public void heartbeat(LockMode mode, Duration took, boolean succeeded) {
        Timer.builder("pglock.heartbeat").description("Lease: one renewal of every held lock; advisory: one lock"
                + " session check").tag("mode", tag(mode)).tag("outcome", succeeded ? "success" : "failure")
                .register(meters).record(took);
    }

    @Override
    public void lost(LockMode mode, String key, LockLostException.Reason reason) {
        Counter.builder("pglock.lost").description("Locks lost by their holders").tag("mode", tag(mode))
                .tag("reason", reason.tagValue()).register(meters).increment();
    }

    @Override
    public void skipped(Method method, String key) {
        Counter.builder("pglock.skipped").description("@DistributedLock calls skipped because the lock was held"
                + " elsewhere").tag("method", method.getDeclaringClass().getSimpleName() + "." + method.getName())
                .register(meters).increment();
    }
}
