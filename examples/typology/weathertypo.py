#!/usr/bin/env python3
"""The original README's weathertypo.py: the cityweather job as a typology, every 10 s.

Put it and cityweather.py in the master's workspace (rz-master -W DIR) and run it there:
it prints every city's weather every 10 s, on the grid, until Ctrl-C, which stops the
typology. REZINA_MASTER_PORT names another control port than 12345.
"""

import os

from rezina import TypologyBuilder
from rezina.backends import Stdout

from cityweather import get_cities, get_city_weather, one_word_conditions_for_city

ip = '127.0.0.1'  # your master_ip
tb = TypologyBuilder(ip, int(os.environ.get('REZINA_MASTER_PORT', 12345)), 'weather_typo2')
tb.add_hydrant(get_cities)
tb.add_notch(get_city_weather, 2, 5)
tb.add_notch(one_word_conditions_for_city, 1, 1)
tb.add_bocca(Stdout, persistent_mode='stream')

if __name__ == "__main__":
    tb.restart(start_time="2016-12-03 20:18:10", interval=10)
