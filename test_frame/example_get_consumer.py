"""Without a decorator (seed README 2.3): ``get_consumer`` binds an existing function to a queue."""
from fsdf import BrokerEnum, get_consumer


def add(a, b):
    print(a + b)


if __name__ == '__main__':
    consumer = get_consumer('queue_test_f02', consuming_function=add, qps=0.2, broker_kind=BrokerEnum.PERSISTQUEUE)
    for i in range(10, 20):
        consumer.publisher_of_same_queue.publish(dict(a=i, b=i * 2))
    consumer.start_consuming_message()
