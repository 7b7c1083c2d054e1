package com.example.billing;

import dev.pglock.spring.DistributedLock;
import org.springframework.scheduling.annotation.Scheduled;
import org.springframework.stereotype.Component;

@Component
public class ReportJob {

    // Every replica's scheduler fires; one runs the job, the others skip quietly (a debug log).
    // The key is the method's full name: "com.example.billing.ReportJob.run()".
    @Scheduled(cron = "0 */5 * * * *")
    @DistributedLock(holdAtLeast = "20s")   // a 10 ms job does not run again on a replica a little behind
    public void run() {
        // build the report
    }
}
