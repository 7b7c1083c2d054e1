package dev.pglock.sample;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.stereotype.Component;

/** Who this replica is and which run its rows belong to. */
@Component
public class SampleSettings {

    private final String replica;
    private final String runId;

    SampleSettings(@Value("${sample.replica:${HOSTNAME:replica}-${PID:0}}") String replica,
            @Value("${sample.run-id:live}") String runId) {
        this.replica = replica;
        this.runId = runId;
    }

    public String replica() {
        return replica;
    }

    public String runId() {
        return runId;
    }
}
