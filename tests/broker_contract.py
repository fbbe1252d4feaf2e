"""The broker contract: the consume-path tests every broker passes, run again by each broker's tests.

A broker's test module defines an ``broker_kind`` fixture that yields its own kinds (and starts
its server), then imports these names, so pytest runs them on that broker unchanged.
"""
from test_consume import (test_every_pushed_call_runs_once, test_last_failure_goes_to_the_dead_letter_queue,
                          test_malformed_messages_go_to_the_dlq_with_the_reason,
                          test_message_without_extra_from_another_program, test_requeue_gives_the_message_back,
                          test_retries_then_success)

__all__ = ['test_every_pushed_call_runs_once', 'test_message_without_extra_from_another_program',
           'test_retries_then_success', 'test_last_failure_goes_to_the_dead_letter_queue',
           'test_malformed_messages_go_to_the_dlq_with_the_reason', 'test_requeue_gives_the_message_back']
