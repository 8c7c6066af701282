"""Hand-written long answers in the style of RLHF-V's detailed descriptions, with their key objects.

RLHF-V answers are paragraphs (several sentences about the main objects, their attributes, the
background, and often a closing sentence on the mood of the scene), so the key object must be
found among many nouns. `key` lists what a human annotator marks as the answer's key objects, most
important first; matching is as in `keyword_cases.py` (same COCO category or the same singular head).
Written once, by hand, for this list; not tuned to any extractor.
"""

DESCRIBE = "Describe this image in detail."
THOROUGH = "Provide a thorough description of the given picture."
HAPPENING = "What do you see happening in this image?"
EXPLAIN = "Explain the visual content of the image in great detail."

LONG_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    (DESCRIBE,
     "The image shows a large brown dog lying on a wooden porch. The dog has its head resting on its front paws and "
     "looks calmly toward the camera. Behind it there is a white door and a potted plant. The overall atmosphere of "
     "the scene is peaceful and relaxed.", ("dog", "porch", "door", "potted plant")),
    (THOROUGH,
     "In this picture, a man in a blue wetsuit is riding a surfboard on a large wave. He is crouching slightly to keep "
     "his balance, and white spray rises around the board. The ocean stretches to the horizon under a clear sky. The "
     "scene captures the excitement of surfing.", ("surfboard", "man", "wave")),
    (HAPPENING,
     "A group of people is gathered around a long dining table in a restaurant. Several plates of pasta, glasses of "
     "wine and a basket of bread are placed on the table. A waiter stands nearby holding a bottle. The people appear "
     "to be enjoying their meal and chatting with each other.", ("person", "dining table", "plate", "wine glass", "bottle")),
    (EXPLAIN,
     "The image features a red double-decker bus driving down a city street. The bus has advertisements on its side "
     "and its windows reflect the buildings around it. A few pedestrians are walking on the sidewalk, and a black car "
     "is parked by the curb. Tall buildings line both sides of the street.", ("bus", "person", "car")),
    (DESCRIBE,
     "The image depicts a cozy living room with a large gray sofa in the center. A wooden coffee table stands in front "
     "of the sofa, holding a vase of yellow flowers and a remote control. A flat-screen television is mounted on the "
     "wall, and a lamp stands in the corner. The room looks clean and comfortable.",
     ("couch", "coffee table", "vase", "tv", "remote", "lamp")),
    (THOROUGH,
     "A young girl is sitting at a kitchen table eating a bowl of cereal. She is holding a spoon in her right hand and "
     "smiling. A glass of orange juice and a carton of milk are next to the bowl. Sunlight comes in through a window "
     "behind her, giving the kitchen a warm glow.", ("girl", "bowl", "spoon", "cup", "milk")),
    (HAPPENING,
     "Two zebras are standing next to each other in a dry grassland. One of them is bending down to graze, while the "
     "other looks off into the distance. A few acacia trees can be seen in the background, and the sky is pale blue. "
     "The image gives a sense of the open African savanna.", ("zebra", "tree")),
    (EXPLAIN,
     "This image shows a tennis player on a hard court in the middle of a serve. He is stretching upward with his "
     "racket raised high above his head, and the ball is visible in the air. He wears a white shirt and dark shorts. "
     "Spectators can be seen sitting in the stands behind the court.", ("tennis racket", "person", "sports ball")),
    (DESCRIBE,
     "The image shows a plate with a large slice of pizza topped with mushrooms, olives and melted cheese. A fork and a "
     "knife lie beside the plate on a checkered tablecloth. In the background, there is a glass of soda and a napkin. "
     "The food looks freshly served and appetizing.", ("pizza", "plate", "fork", "knife", "cup")),
    (THOROUGH,
     "A black and white cat is curled up asleep on a laptop keyboard. The laptop sits on a wooden desk next to a cup of "
     "coffee and a stack of papers. The screen of the laptop is turned on and shows a document. The cat seems "
     "completely comfortable despite the unusual resting spot.", ("cat", "laptop", "keyboard", "cup", "desk")),
    (HAPPENING,
     "In the image, a man is flying a colorful kite on a sandy beach. He is holding the string with both hands and "
     "looking up at the kite, which is high in the sky. A few other people are walking along the shore, and gentle "
     "waves are rolling in. The weather appears sunny and windy.", ("kite", "man", "person")),
    (EXPLAIN,
     "The picture features an elephant standing in a shallow river. The elephant is spraying water over its back with "
     "its trunk. Lush green trees and bushes cover the riverbank behind it. The water reflects the light, creating a "
     "calm and natural scene.", ("elephant", "river", "tree")),
    (DESCRIBE,
     "A white toilet and a small sink are visible in this narrow bathroom. A mirror hangs above the sink, and a blue "
     "towel is folded on a rack next to it. The floor is covered with beige tiles. A roll of toilet paper sits on a "
     "shelf above the toilet. The bathroom appears clean and tidy.", ("toilet", "sink", "mirror", "towel")),
    (THOROUGH,
     "The image captures a train arriving at a station platform. The train is painted yellow and blue, and its "
     "headlights are on. Several passengers are waiting on the platform with their bags, and a clock hangs from the "
     "roof of the station. The tracks curve away into the distance.", ("train", "platform", "person", "clock")),
    (HAPPENING,
     "A skateboarder is performing a trick at a skate park. He is in the air above a concrete ramp, with the "
     "skateboard flipping beneath his feet. He is wearing a helmet and knee pads. Other skaters are watching from the "
     "edge of the ramp, and graffiti covers the walls behind them.", ("skateboarder", "skateboard", "ramp")),
    (EXPLAIN,
     "This image shows a bowl of fresh fruit on a marble countertop. The bowl contains bananas, red apples and a few "
     "oranges. Next to the bowl there is a cutting board with a knife on it. The kitchen cabinets in the background "
     "are white, and a toaster sits in the corner.",
     ("bowl", "banana", "apple", "orange", "cutting board", "knife", "toaster")),
    (DESCRIBE,
     "The image shows a herd of sheep grazing on a green hillside. Most of the sheep are white, and one black sheep "
     "stands out in the middle of the group. A wooden fence runs along the bottom of the hill, and a farmhouse can be "
     "seen in the distance. Low clouds hang over the hills.", ("sheep", "fence", "house")),
    (THOROUGH,
     "A woman is walking down a rainy street holding a red umbrella. She is wearing a long coat and carrying a handbag "
     "over her shoulder. The wet pavement reflects the lights of the shops along the street. A bicycle is leaning "
     "against a lamp post on the right side of the image.", ("umbrella", "woman", "handbag", "bicycle")),
    (HAPPENING,
     "The image shows a baseball game in progress. The batter is swinging his bat at a pitch, while the catcher "
     "crouches behind home plate with his glove ready. The umpire stands behind the catcher, watching closely. The "
     "stands in the background are filled with fans.", ("person", "baseball bat", "baseball glove")),
    (EXPLAIN,
     "In this picture, a brown horse is pulling a wooden cart along a dirt road. A man wearing a straw hat is sitting "
     "on the cart and holding the reins. Fields of tall grass stretch out on both sides of the road, and a line of "
     "trees marks the horizon. The scene looks rural and quiet.", ("horse", "cart", "man")),
    (DESCRIBE,
     "The image shows a desk with a computer monitor, a keyboard and a mouse. A pair of headphones lies next to the "
     "keyboard, and a potted cactus sits in the corner of the desk. A cup full of pens stands beside the monitor. The "
     "wall behind the desk is painted light green.", ("monitor", "keyboard", "mouse", "headphones", "cup")),
    (THOROUGH,
     "A giraffe is standing next to a tall tree and eating leaves from its upper branches. Its long neck is stretched "
     "up, and its patterned coat is clearly visible. Another giraffe stands further back near a wooden fence. The "
     "enclosure looks like part of a zoo, with rocks and grass on the ground.", ("giraffe", "tree", "fence")),
    (HAPPENING,
     "The picture shows a chef in a white uniform preparing food in a busy kitchen. He is chopping vegetables on a "
     "cutting board with a large knife. Pots and pans are hanging above the stove behind him, and steam rises from a "
     "pot of soup. Another cook is working at the counter in the background.",
     ("chef", "knife", "cutting board", "pot", "stove")),
    (EXPLAIN,
     "The image depicts a small boat floating on a calm lake. A man is sitting in the boat holding a fishing rod, and "
     "the line stretches into the water. Mountains covered in pine trees surround the lake, and their reflection is "
     "visible on the surface. The morning light gives the scene a soft glow.", ("boat", "man", "fishing rod")),
    (DESCRIBE,
     "A little boy is playing with a red ball in a grassy backyard. He is kicking the ball with his right foot and "
     "looks very focused. A small dog is running beside him, trying to catch the ball. A swing set and a wooden fence "
     "can be seen behind them.", ("boy", "sports ball", "dog", "swing")),
    (THOROUGH,
     "This image shows a bedroom with a large bed covered by a white blanket and several pillows. A teddy bear sits "
     "against the pillows. To the left of the bed there is a nightstand with a lamp and an alarm clock. A painting of "
     "a beach hangs on the wall above the headboard.", ("bed", "pillow", "teddy bear", "lamp", "clock", "painting")),
    (HAPPENING,
     "A motorcycle rider is speeding along a winding mountain road. The rider is wearing a black helmet and a leather "
     "jacket, and the motorcycle is leaning into a sharp curve. A metal guardrail runs along the edge of the road, and "
     "steep rocky cliffs rise on the other side.", ("motorcycle", "person", "helmet", "guardrail")),
    (EXPLAIN,
     "The image shows a birthday cake with lit candles on a table. The cake is covered with white frosting and "
     "decorated with strawberries. Several children are gathered around the table, and one girl is leaning forward to "
     "blow out the candles. Balloons are tied to the chairs in the background.",
     ("cake", "candle", "person", "balloon")),
    (DESCRIBE,
     "In the image, a fire hydrant stands on the corner of a sidewalk. The hydrant is painted bright yellow with a red "
     "cap. Behind it, a brick building has a green door and a window with flower boxes. A stop sign is visible on the "
     "left side of the picture.", ("fire hydrant", "stop sign", "building")),
    (THOROUGH,
     "A flock of pigeons is gathered in a town square, pecking at bread crumbs on the ground. An old man sitting on a "
     "bench is tossing crumbs to the birds. A fountain stands in the middle of the square, and a few people are "
     "walking past it. Historic buildings surround the square.", ("bird", "bench", "man", "fountain")),
    (HAPPENING,
     "The picture shows an airplane taking off from a runway. The plane's landing gear is still down, and its nose is "
     "pointed up toward the sky. Grass and runway lights line the edges of the runway. In the background there is an "
     "airport terminal and a control tower.", ("airplane", "runway", "tower")),
    (EXPLAIN,
     "This image features a bowl of ramen on a wooden table. The bowl is filled with noodles, slices of pork, a boiled "
     "egg and green onions. A pair of chopsticks rests on the edge of the bowl. A small dish of dumplings and a cup of "
     "tea are placed next to it.", ("bowl", "noodles", "egg", "chopsticks", "cup")),
    (DESCRIBE,
     "The image shows a snowy mountain slope with a skier in a red jacket going downhill. The skier is holding ski "
     "poles and leaning forward, leaving tracks in the fresh snow. Pine trees covered with snow stand along the edge "
     "of the slope. The sky is bright and clear.", ("skis", "person", "tree")),
    (THOROUGH,
     "A cow is standing in a muddy field next to a red barn. The cow is black with white patches and is looking "
     "directly at the camera. A tractor is parked near the barn, and a few chickens are wandering around the yard. "
     "Rolling green hills can be seen in the distance.", ("cow", "barn", "tractor", "bird")),
]
