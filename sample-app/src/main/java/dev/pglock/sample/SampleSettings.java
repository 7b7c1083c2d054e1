package dev.pglock.sample;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.stereotype.Component;

/** Who this replica is and which run its rows belong to. */
@Component
public class SampleSettings {

    private final String replica;
    private final String runId;
    private final int workMillis;

    SampleSettings(@Value("${sample.replica:${HOSTNAME:replica}-${PID:0}}") String replica,
            @Value("${sample.run-id:live}") String runId, @Value("${sample.work-millis:4}") int workMillis) {
        this.replica = replica;
        this.runId = runId;
        this.workMillis = Math.max(1, workMillis);
    }

    /**
     * Stands for the slow part of a piece of work under a lock (a payment provider's round trip):
     * about {@code sample.work-millis}, give or take a half. Without the lock, another replica would
     * do the same work meanwhile.
     */
    void pause() {
        try {
            Thread.sleep(java.util.concurrent.ThreadLocalRandom.current().nextInt(Math.max(1, workMillis / 2),
                    workMillis + workMillis / 2 + 1));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    public String replica() {
        return replica;
    }

    public String runId() {
        return runId;
    }
}
