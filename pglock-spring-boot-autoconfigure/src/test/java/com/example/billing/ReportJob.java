package com.example.billing;

import dev.pglock.spring.DistributedLock;
import org.springframework.scheduling.annotation.Scheduled;
import org.springframework.stereotype.Component;

@Component
public class ReportJob {

    // Every replica's scheduler fires; one runs the job, the others skip quietly (a debug log).
    // The key is the method's full name: "com.example.billing.ReportJob.run()".
    @Scheduled(cron = "0 */5 * * * *")
    // holdAtLeast: a 10 ms job does not run again on a replica whose clock is a little behind.
    // leaseFor: in lease mode a hold must fit in the lease (10 s by default); ignored in advisory mode.
    @DistributedLock(holdAtLeast = "20s", leaseFor = "30s")
    public void run() {
        // build the report
    }
}
