package dev.pglock.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
import org.junit.jupiter.api.Test;

class LockRequestTest {

    @Test
    void defaultsTryOnceExclusivelyWithTheClientsLease() {
        LockRequest request = LockRequest.of("job");
        assertThat(request.key()).isEqualTo("job");
        assertThat(request.waitAtMost()).isZero();
        assertThat(request.lease()).isEmpty();
        assertThat(request.holdAtLeast()).isZero();
        assertThat(request.isShared()).isFalse();
        assertThat(request.data()).isNull();
    }

    @Test
    void eachSetterReturnsANewRequest() {
        LockRequest base = LockRequest.of("job");
        LockRequest changed = base.waitAtMost(Duration.ofSeconds(1)).leaseFor(Duration.ofSeconds(30))
                .holdAtLeast(Duration.ofSeconds(5)).shared().data(new byte[] {1, 2});
        assertThat(base.waitAtMost()).isZero();
        assertThat(changed.waitAtMost()).hasSeconds(1);
        assertThat(changed.lease()).contains(Duration.ofSeconds(30));
        assertThat(changed.holdAtLeast()).hasSeconds(5);
        assertThat(changed.isShared()).isTrue();
        assertThat(changed.data()).containsExactly(1, 2);
        assertThat(changed).isEqualTo(LockRequest.of("job").shared().waitAtMost(Duration.ofSeconds(1))
                .leaseFor(Duration.ofSeconds(30)).holdAtLeast(Duration.ofSeconds(5)).data(new byte[] {1, 2}));
    }

    @Test
    void dataIsCopiedInAndOut() {
        byte[] bytes = {1};
        LockRequest request = LockRequest.of("job").data(bytes);
        bytes[0] = 9;
        request.data()[0] = 7;
        assertThat(request.data()).containsExactly(1);
    }

    @Test
    void badKeysNameTheFieldAndTheValue() {
        assertThatThrownBy(() -> LockRequest.of(null)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("key must not be null");
        assertThatThrownBy(() -> LockRequest.of("  ")).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("key must not be blank, got '  '");
        assertThatThrownBy(() -> LockRequest.of("x".repeat(256))).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("key must be at most 255 characters, got 256");
        assertThatThrownBy(() -> LockRequest.of("a\0b")).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("NUL").hasMessageContaining("a\\0b");
        assertThat(LockRequest.of("x".repeat(255)).key()).hasSize(255);
    }

    @Test
    void badDurationsNameTheFieldAndTheValue() {
        LockRequest r = LockRequest.of("job");
        assertThatThrownBy(() -> r.waitAtMost(Duration.ofSeconds(-1))).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("waitAtMost must not be negative, got PT-1S");
        assertThatThrownBy(() -> r.holdAtLeast(Duration.ofMillis(-5))).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("holdAtLeast must not be negative, got PT-0.005S");
        assertThatThrownBy(() -> r.leaseFor(Duration.ZERO)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("leaseFor must be positive, got PT0S");
        assertThatThrownBy(() -> r.waitAtMost(null)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("waitAtMost must not be null");
        // Review: leaseFor(null) threw a NullPointerException, unlike the other two.
        assertThatThrownBy(() -> r.leaseFor(null)).isInstanceOf(IllegalArgumentException.class)
                .hasMessage("leaseFor must not be null");
    }

    @Test
    void holdAtLeastMayNotOutlastTheLease() {
        assertThatThrownBy(() -> LockRequest.of("job").leaseFor(Duration.ofSeconds(10)).holdAtLeast(Duration.ofSeconds(11)))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessage("holdAtLeast (PT11S) must not be longer than leaseFor (PT10S) for key 'job'");
        assertThatThrownBy(() -> LockRequest.of("job").holdAtLeast(Duration.ofSeconds(11)).leaseFor(Duration.ofSeconds(10)))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("holdAtLeast");
    }
}
