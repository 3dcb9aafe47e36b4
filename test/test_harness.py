"""The test run's own isolation (conftest.py): a ROS domain that is never the shell's."""

import os
import subprocess
import sys

from conftest import SHELL_DOMAIN


def test_the_tests_talk_on_a_domain_of_their_own():
    domain = os.environ["ROS_DOMAIN_ID"]
    assert domain != SHELL_DOMAIN and 1 <= int(domain) <= 101
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['ROS_DOMAIN_ID'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == domain  # the node and player processes of the tests share it
